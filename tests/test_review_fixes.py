"""Fast tests (seconds, crafted tensors or a scripted sampler, no learning runs) for the bugs and the
uncaught mutations of the method review of issue 21. Each test names what it guards; each was
seen to fail with the bug put back / the mutation applied.

The scripted sampler (reference_impls.testing.scripted_sample) replaces model sampling: every
completion is a function of (prompt, copy index), so rewards, groups and buffers are known.
The two-process (gloo) checks of the same fixes are in tests/test_distributed_families.py.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

import reference_impls.testing  # noqa: F401  (HF offline, 1 torch thread)
from reference_impls.core import sampling
from reference_impls.core.hybrid import wsum
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.train import step_rng
from reference_impls.methods import (  # noqa: F401  (loaded, so the scripted sampler reaches them)
    clip_cov,
    dapo,
    dr_grpo,
    kl_cov,
    luffy,
    orpo,
    prefix_rft,
    reinforce_pp,
    relift,
    srft,
)
from reference_impls.tasks.addition import Addition
from reference_impls.testing import make_algo, scripted_outcome, scripted_sample


@pytest.fixture
def scripted(monkeypatch):
    """Every reference_impls module that imported core.sampling.sample gets the scripted sampler."""
    real = sampling.sample
    for name, mod in list(sys.modules.items()):
        if name.startswith("reference_impls") and getattr(mod, "sample", None) is real:
            monkeypatch.setattr(mod, "sample", scripted_sample)


class HalfTask(Addition):
    """What one of two ranks sees under torchrun (core/distributed.ShardedTask): the first half of
    every draw of prompts."""

    def prompts(self, n, rng):
        items = super().prompts(n, rng)
        return items[: len(items) // 2]


# ------------------------------------------------------------------------------------ A. bugs
def test_dapo_without_dynamic_sampling_takes_the_ranks_share(scripted):
    """Bug: dynamic_sampling=False kept torch.ones(want) groups, `want` the GLOBAL prompt count,
    while a rank samples its share: group_rows pointed past the batch (IndexError on 2 ranks)."""
    a = make_algo("dapo", task=HalfTask(), batch_size=32, group_size=4, dynamic_sampling=False)
    batch, log = a.collect(0)
    assert len(batch["input_ids"]) == 16 and log["kept_groups"] == 4.0


def test_dapo_dynamic_sampling_fills_the_ranks_share(scripted):
    """DAPO's row quota under torchrun: a rank fills its share of the step's groups, not all of
    them (N ranks together train on batch_size rows)."""
    a = make_algo("dapo", task=HalfTask(), batch_size=64, group_size=4, max_tries=3)
    batch, log = a.collect(0)
    assert log["kept_groups"] <= 8 and len(batch["input_ids"]) == 4 * log["kept_groups"]


def test_dapo_completion_len_counts_only_the_completion(scripted):
    """Bug: the logged completion_len summed the attention mask (prompt + completion)."""
    a = make_algo("dapo", batch_size=32, group_size=4, dynamic_sampling=False)
    batch, log = a.collect(0)
    want = sum(len(c) + 1 for c in sampling.encode(a.tok, batch_texts(a, batch))) / len(batch["mask"])
    assert log["completion_len"] == pytest.approx(want)  # characters + EOS (char tokenizer)
    assert log["completion_len"] == pytest.approx(batch["mask"].sum(-1).float().mean().item())


def batch_texts(algo, batch) -> list[str]:
    """The completion texts of a batch (tokens after the prompt region, EOS and pads dropped)."""
    P = int(batch["mask"].any(0).float().argmax()) + 1
    return [algo.tok.decode([t for t, m in zip(ids[P:].tolist(), am[P:].tolist(), strict=True)
                             if m and t != algo.tok.eos_token_id]) for ids, am in
            zip(batch["input_ids"], batch["attention_mask"], strict=True)]


def test_orpo_sft_term_skips_the_pad_predicted_token():
    """Bug: the prompt+completion NLL mask kept the first real token of each left-padded row,
    predicted from a pad position (22 targets instead of 20 on prompts of lengths 4, 6, 5). The
    NLL must be the mean over each row's own tokens, as if every row were scored unpadded."""
    a = make_algo("orpo")
    pairs = [("1+2=", "3", "4"), ("12+34=", "46", "47"), ("1+23=", "24", "2")]
    b = orpo.pair_tensors(a.tok, pairs, "cpu")
    assert b["chosen_attention_mask"][:, 0].tolist() == [0, 1, 0]  # rows 0 and 2 left-padded
    assert a.nll_mask(b).sum().item() == (4 + 1 + 1 - 1) + (6 + 2 + 1 - 1) + (5 + 2 + 1 - 1) == 20
    b["nll_tokens"] = a.nll_mask(b).sum().expand(3).clone()
    _, stats = a.loss(b, {"rows": 3})
    with torch.no_grad():  # each chosen row alone, no padding: sum over its targets / 20
        total = 0.0
        for i in range(3):
            ids = b["chosen_input_ids"][i][b["chosen_attention_mask"][i].bool()][None]
            total -= sequence_logprobs(a.module, ids, torch.ones_like(ids)).sum().item()
    assert stats["nll"] == pytest.approx(total / 20, rel=1e-5)


def test_relift_ratio_uses_the_stored_pi_old(scripted):
    """Bug: ReLIFT never stored old_logp and its loss used sg[logp], so with updates_per_batch > 1
    the ratio was always 1. With pi_old stored, shifting old_logp by c scales -rho A by e^-c."""
    a = make_algo("relift", batch_size=16, group_size=4, updates_per_batch=2)
    batch, log = a.collect(0)
    assert log["sft_step"] == 0.0 and "old_logp" in batch
    torch.testing.assert_close(batch["old_logp"], sequence_logprobs(a.module, batch["input_ids"],
                                                                    batch["attention_mask"]))
    assert batch["advantages"].abs().sum() > 0
    c = 0.3
    shifted = dict(batch, old_logp=batch["old_logp"] + c)
    with torch.no_grad():
        l0, l1 = a.loss(batch, {})[0].item(), a.loss(shifted, {})[0].item()
        pg0 = -wsum(batch["advantages"][:, None].expand_as(batch["mask"]), batch["mask"], batch["w"]).item()
    assert l1 - l0 == pytest.approx((math.exp(-c) - 1) * pg0, rel=1e-4, abs=1e-7)


# ------------------------------------------------------------------------------ B. mutations
def test_dr_grpo_collect_does_not_divide_by_std(scripted, monkeypatch):
    """Mutation: Dr. GRPO dividing by the group std again in collect. A_i = r_i - mean_g r."""
    seen = {}
    real = dr_grpo.rollout

    def spy(algo, problems, greedy=False):
        b, r = real(algo, problems, greedy)
        seen["r"] = r
        return b, r

    monkeypatch.setattr(dr_grpo, "rollout", spy)
    a = make_algo("dr-grpo", batch_size=32, group_size=4)
    batch, _ = a.collect(0)
    r = seen["r"].view(-1, 4)
    assert ((r.std(-1) > 0) & ((r.std(-1) - 1).abs() > 0.1)).any()  # a group where std matters
    torch.testing.assert_close(batch["advantages"], (r - r.mean(-1, keepdim=True)).view(-1))


def test_reinforce_pp_kl_penalty_lowers_the_return(scripted, monkeypatch):
    """Mutation: the KL penalty's sign flipped in REINFORCE++'s collect. KL(t) = log pi_old -
    log pi_ref enters the reward as -beta KL(t) (before whitening)."""
    seen = {}
    real = reinforce_pp.reinforce_pp_advantages

    def spy(rewards, mask, kl=None, *args, **kw):
        seen["r"] = rewards
        return real(rewards, mask, kl, *args, **kw)

    monkeypatch.setattr(reinforce_pp, "reinforce_pp_advantages", spy)
    a = make_algo("reinforce-pp", batch_size=16, group_size=1, beta=0.5)
    with torch.no_grad():  # the policy moves away from the reference: KL != 0
        g = torch.Generator().manual_seed(0)
        for p in a.module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    batch, _ = a.collect(0)
    with torch.no_grad():
        kl = a.logp(a.module, batch) - a.logp(a.ref, batch)  # log pi_old - log pi_ref
    m = batch["mask"]
    want = real(seen["r"], m, kl, 0.5)
    torch.testing.assert_close(batch["advantages"], want)
    assert not torch.allclose(real(seen["r"], m, -kl, 0.5), want, atol=1e-3)  # the sign matters


def _pad_heavy_batch():
    """4 rows x 6 tokens, 3 valid tokens per row (the rest prompt/pad), advantages of both signs,
    log-probs on invalid positions far from the valid ones."""
    g = torch.Generator().manual_seed(3)
    logp = -torch.rand(4, 6, generator=g, dtype=torch.float64)
    mask = torch.zeros(4, 6, dtype=torch.float64)
    mask[:, 3:] = 1
    logp[:, :3] = -8.0 + 16 * torch.rand(4, 3, generator=g, dtype=torch.float64)
    return logp, torch.tensor([1.0, -1.0, 0.5, -0.25], dtype=torch.float64), mask


def test_clip_cov_selects_only_completion_tokens():
    """Mutation: Clip-Cov drawing I_clip without the mask (prompt and pad tokens become candidates,
    so few real tokens are detached). Band wide open, r = 1: exactly the valid tokens."""
    logp, adv, mask = _pad_heavy_batch()
    cov = clip_cov.token_covariance(logp, adv, mask)
    assert ((cov > -1e3) & (cov < 1e3) & (mask == 0)).sum() == 12  # invalid tokens sit in the band
    for seed in range(3):
        sel = clip_cov.clip_cov_select(logp, adv, mask, 1.0, -1e3, 1e3,
                                       generator=torch.Generator().manual_seed(seed))
        assert torch.equal(sel, mask.bool())


def test_kl_cov_ranks_only_completion_tokens():
    """Mutation: KL-Cov ranking tokens without the mask. The top half of the VALID tokens by
    covariance, although invalid positions hold larger covariances."""
    logp, adv, mask = _pad_heavy_batch()
    cov = clip_cov.token_covariance(logp, adv, mask)
    assert cov[mask == 0].max() > cov[mask > 0].max()  # the mask matters here
    sel = kl_cov.kl_cov_select(logp, adv, mask, 0.5)
    valid = cov[mask > 0]
    want = (cov >= valid.sort(descending=True).values[5]) & (mask > 0)  # top 6 of 12 valid
    assert torch.equal(sel, want) and sel.sum() == 6


def test_srft_correct_rollouts_get_the_positive_weight(scripted, monkeypatch):
    """Mutation: SRFT's is_correct inverted (in collect or in the loss). Correct rollouts are
    reinforced (A = 0.1 exp(H) > 0), wrong ones pushed down (A = -1)."""
    seen = {}
    real = srft.mixed_groups

    def spy(*args, **kw):
        ro, r = real(*args, **kw)
        seen["r"] = r
        return ro, r

    monkeypatch.setattr(srft, "mixed_groups", spy)
    a = make_algo("srft", batch_size=32, group_size=4)
    batch, _ = a.collect(0)
    ok = (seen["r"] >= 0.5).float()
    assert 0 < ok[batch["is_demo"] == 0].mean() < 1
    assert torch.equal(batch["is_correct"], ok)
    logp = torch.full((2, 1), math.log(0.5), requires_grad=True)  # two rollouts, 1 token each
    loss, _ = srft.srft_loss(logp, torch.zeros(2, 1), torch.ones(2, 1), torch.zeros(2),
                             torch.tensor([1.0, 0.0]), torch.zeros(2), torch.zeros(2), torch.ones(2))
    loss.backward()
    assert logp.grad[0, 0] == pytest.approx(-0.1) and logp.grad[1, 0] == pytest.approx(1.0)


def test_relift_buffers_only_groups_that_all_failed(scripted):
    """Mutation: ReLIFT buffering any group with a failure. Only prompts none of whose n
    rollouts is correct go into the buffer (scripted: sum % 4 == 0)."""
    a = make_algo("relift", batch_size=64, group_size=4, buffer_size=1000)
    problems = a.task.prompts(16, step_rng(0, 0))
    kinds = [(p.a + p.b) % 4 for p in problems]
    assert 0 in kinds and (2 in kinds or 3 in kinds)  # all-fail and partly failing groups
    a.collect(0)
    assert [p for p, _ in a.buffer] == [p.prompt for p in problems if not scripted_outcome(p.prompt, 1)
                                        and not scripted_outcome(p.prompt, 0)]
    assert [p for p, _ in a.buffer] == [p.prompt for p, k in zip(problems, kinds, strict=True) if k == 0]


def test_luffy_uses_the_constant_normaliser(scripted):
    """Mutation: LUFFY's loss a per-token mean instead of the official constant (sum / (B * L_max),
    loss_remove_token_mean); the entropy bonus stays a token mean."""
    a = make_algo("luffy", batch_size=16, group_size=4, max_new_tokens=6)
    batch, _ = a.collect(0)
    B, n_tok = len(batch["mask"]), batch["mask"].sum()
    torch.testing.assert_close(batch["w"], torch.full((B,), 1 / (B * 6)))
    torch.testing.assert_close(batch["w_tok"], torch.full((B,), 1 / n_tok.item()))
    A = batch["advantages"]
    with torch.no_grad():  # rho = 1 on sampled tokens: on-policy part = -sum_t A m / (B * L_max)
        logp = sequence_logprobs(a.module, batch["input_ids"], batch["attention_mask"])
        loss, _ = luffy.luffy_loss(logp, logp, A, batch["mask"], torch.zeros_like(logp), batch["w"])
    assert loss.item() == pytest.approx(-(A * batch["mask"].sum(-1)).sum().item() / (B * 6), rel=1e-5)


def test_prefix_rft_clips_low_entropy_prefix_tokens(scripted):
    """Mutation: Prefix-RFT skipping entropy clipping in collect. Prefix tokens below the
    (1 - top) entropy quantile of the batch's prefix tokens lose their advantage; the rest keep
    their row's A."""
    a = make_algo("prefix-rft", batch_size=64, group_size=4, n_prefix=2, l_start=0.95, top_entropy=0.5)
    batch, _ = a.collect(0)
    pre, m = batch["forced"].bool(), batch["mask"].bool()
    assert pre.sum() >= 8
    with torch.no_grad():
        _, ent = sequence_logprobs(a.module, batch["input_ids"], batch["attention_mask"], return_entropy=True)
    A = batch["adv_tok"]
    row_A = A.masked_fill(~(m & ~pre), float("nan")).nanmean(-1)  # each row's A on its sampled tokens
    thr = torch.quantile(ent[pre], 0.5)
    for i, t in pre.nonzero().tolist():
        want = 0.0 if ent[i, t] < thr else row_A[i].item()
        assert A[i, t].item() == pytest.approx(want, abs=1e-6), (i, t)
    assert ((A == 0) & pre & (row_A[:, None] != 0)).any()  # some clipping happened


# ------------------------------------------------------------------------------ E. hygiene
def test_core_imports_no_method():
    """core/ knows no method: no module under reference_impls/core imports reference_impls.methods
    (sft_loss, grpo_loss live in core/losses.py)."""
    import ast
    from pathlib import Path

    core = Path(sampling.__file__).parent
    bad = []
    for f in sorted(core.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{f.name}: {n}" for n in names if n.startswith("reference_impls.methods")]
    assert bad == []
