"""Core machinery: tokenizer/model preset, sampling, accumulation invariance, resume, non-finite stop."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.model import load_model, tiny_path
from reference_impls.core.sampling import encode, left_pad, prompt_completion_batch, sample
from reference_impls.core.train import NonFiniteError, TrainConfig, lr_at, train
from reference_impls.tasks.base_model import warm_start
from reference_impls.testing import make_algo, params


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def test_tiny_tokenizer_is_character_level(tiny):
    _, tok = tiny
    ids = encode(tok, ["12+34="])[0]
    assert len(ids) == 6 and tok.decode(ids) == "12+34="
    assert all(len(tok.decode([tok.convert_tokens_to_ids(d)])) == 1 for d in "0123456789")
    assert tok.pad_token_id != tok.eos_token_id and tok.bos_token is None


def test_tiny_folder_loads_with_plain_hf_classes(tiny):
    model, _ = tiny
    path = tiny_path()
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    assert tok.decode(tok("7+8=", add_special_tokens=False)["input_ids"]) == "7+8="
    other = AutoModelForCausalLM.from_pretrained(path)
    assert sum(p.numel() for p in other.parameters()) == sum(p.numel() for p in model.parameters())


def test_prompt_completion_batch_masks(tiny):
    _, tok = tiny
    b = prompt_completion_batch(tok, ["1+2=", "10+20="], ["3", "30"])
    # row 0: [pad pad 1 + 2 = 3 eos ...]; completion mask scores "3" and EOS only
    assert b["mask"].sum(-1).tolist() == [2.0, 3.0]
    assert b["input_ids"].shape[1] - 1 == b["mask"].shape[1]
    row = b["input_ids"][0][1:][b["mask"][0].bool()].tolist()
    assert row == [tok.convert_tokens_to_ids("3"), tok.eos_token_id]


def test_sampling_masks_stop_at_eos(tiny):
    model, tok = tiny
    torch.manual_seed(0)
    ro = sample(model, tok, ["1+2=", "12+34="], 5)
    comp = ro.input_ids[:, ro.prompt_len:]
    cm = ro.attention_mask[:, ro.prompt_len:]
    for row, m in zip(comp.tolist(), cm.tolist(), strict=True):
        kept = [t for t, k in zip(row, m, strict=True) if k]
        assert tok.eos_token_id not in kept[:-1]  # nothing kept after the first EOS
        assert all(t == tok.pad_token_id for t, k in zip(row, m, strict=True) if not k)


def test_static_cache_sampling_equals_dynamic(tiny):
    model, tok = tiny
    prompts = ["1+2=", "12+34=", "123+456="]
    torch.manual_seed(0)
    a = sample(model, tok, prompts, 5)
    torch.manual_seed(0)
    b = sample(model, tok, prompts, 5, cache_implementation="static")
    assert torch.equal(a.input_ids, b.input_ids) and a.completions == b.completions


def test_rescoring_left_padded_samples_is_on_policy(tiny):
    """Re-scored log-probs (position ids from the mask) equal generate()'s own logits."""
    model, tok = tiny
    prompts = ["1+2=", "12+34=", "123+456="]  # different lengths -> left padding
    p_ids, p_mask = left_pad(encode(tok, prompts), tok.pad_token_id)
    out = model.generate(input_ids=p_ids, attention_mask=p_mask, max_new_tokens=4, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=tok.pad_token_id,
                         eos_token_id=None)
    seq = out.sequences
    P = p_ids.shape[1]
    gen_lp = torch.stack([torch.log_softmax(lg.float(), -1).gather(-1, seq[:, P + i, None]).squeeze(-1)
                          for i, lg in enumerate(out.logits)], 1)  # [B, 4]
    am = torch.cat([p_mask, torch.ones_like(seq[:, P:])], 1)
    with torch.no_grad():
        lp = sequence_logprobs(model, seq, am)[:, P - 1:]  # [B, 4]
    torch.testing.assert_close(lp, gen_lp, atol=1e-4, rtol=1e-4)


def test_lr_schedule():
    c = TrainConfig(steps=10, lr=1.0, warmup_steps=2, schedule="cosine", min_lr_ratio=0.0)
    assert [lr_at(c, s) for s in (0, 1)] == [0.5, 1.0]
    assert lr_at(c, 2) == pytest.approx(1.0) and lr_at(c, 6) == pytest.approx(0.5)
    assert lr_at(TrainConfig(lr=0.1), 50) == 0.1


# -------------------------------------------------------------- accumulation invariance

RL = ("grpo", "ppo")  # start from the warm-start base so that rewards (hence gradients) are non-zero

def _one_step(method: str, micro: int | None, **cfg) -> dict[str, torch.Tensor]:
    algo = make_algo(method, seed=3, base=method in RL, **cfg)
    train(algo, algo.cfg, progress=False)
    return params(algo.module)


@pytest.fixture
def sgd(monkeypatch):
    """SGD makes the update linear in the gradient (Adam's first step is ~sign(g), which turns
    float noise on near-zero gradients into lr-sized differences)."""
    import reference_impls.core.train as core_train

    warm_start()  # build (or find) the cached base with the real optimizer before patching it
    monkeypatch.setattr(core_train, "make_optimizer",
                        lambda module, cfg: torch.optim.SGD(module.parameters(), lr=cfg.lr))


CASES = [("sft", {}), ("dpo", {"loss_type": "sigmoid"}), ("dpo", {"loss_type": "ipo"}),
         ("ppo", {"updates_per_batch": 2})] + [
    ("grpo", {"aggregation": a, "beta": 0.04, "updates_per_batch": 2})
    for a in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "constant")]


@pytest.mark.parametrize(("method", "cfg"), CASES, ids=[f"{m}-{c}" for m, c in CASES])
def test_accumulation_invariance(method, cfg, sgd):
    """One step with batch B equals k micro-batches of B/k, to float tolerance. Gradient clipping is
    off: a clipped step rescales any gradient to the same norm and would hide a wrong normaliser."""
    kw = dict(steps=1, batch_size=16, lr=0.5, max_grad_norm=None, **cfg)
    full = _one_step(method, None, micro_batch_size=None, **kw)
    split = _one_step(method, 4, micro_batch_size=4, **kw)
    start = params(make_algo(method, seed=3, base=method in RL, **cfg).module)
    moved = sum((full[k] - start[k]).abs().sum() for k in full)
    assert moved > 0  # the step did something
    for k in full:  # the updates agree to float round-off, relative to their size (unclipped
        # updates can be large); a micro-batch normaliser off by B/b is off by a factor of 4 here
        d_full, d_split = full[k] - start[k], split[k] - start[k]
        assert (d_split - d_full).norm() <= 1e-4 * d_full.norm() + 1e-7, k


# -------------------------------------------------------------- checkpoints, resume, non-finite

@pytest.mark.parametrize("method", ["grpo", "ppo", "sft"])
def test_resume_equals_uninterrupted(method, tmp_path):
    cfg = dict(steps=4, batch_size=16, lr=3e-3, warmup_steps=2, schedule="cosine")
    a = make_algo(method, seed=1, base=method in RL, **cfg)
    hist_a = train(a, a.cfg, progress=False)
    b = make_algo(method, seed=1, base=method in RL, **cfg)
    ck = tmp_path / "ck.safetensors"
    train(b, b.cfg, progress=False, checkpoint=ck, stop_after=2)
    torch.manual_seed(12345)  # the interruption scrambles the RNG; resume must restore it
    c = make_algo(method, seed=1, base=method in RL, **cfg)
    hist_c = train(c, c.cfg, progress=False, resume=ck)
    assert [h["loss"] for h in hist_c] == [h["loss"] for h in hist_a]
    pa, pc = params(a.module), params(c.module)
    for k in pa:
        torch.testing.assert_close(pc[k], pa[k], atol=0, rtol=0, msg=k)


def test_non_finite_loss_stops_with_step_and_quantity():
    algo = make_algo("sft", steps=5, batch_size=8)
    real = algo.loss

    def loss(micro, totals):
        value, stats = real(micro, totals)
        return (value * float("nan") if len(seen) == 2 else value), stats

    seen: list = []
    algo.loss = loss
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(nan\) at step 2"):
        train(algo, algo.cfg, progress=False, on_step=seen.append)
    assert len(seen) == 2
