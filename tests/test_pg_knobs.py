"""The policy-gradient knobs (core/pg.py: `aggregation`, `scale_rewards`), the newer losses (CISPO,
SAPO, GMPO, GKD) and the shared diagnostics, against their peers on the same model and batch.

  * every aggregation mode against verl's `agg_loss` (transcribed below from
    volcengine/verl@26b5d6b2 verl/trainer/ppo/core_algos.py, `agg_loss` and the vanilla PPO
    policy loss `compute_policy_loss`, with `verl_F.masked_mean` = (x * m).sum() / m.sum()),
    and, where TRL names it, against TRL 1.16's GRPOTrainer `loss_type` (grpo, bnpo, dapo and
    dr_grpo are in tests/test_parity_trl.py; luspo = GSPO's ratio with seq-mean-token-sum here);
  * cispo, sapo against GRPOTrainer(loss_type=...), gmpo against trl.experimental GMPOTrainer,
    gkd against GKDTrainer.generalized_jsd_loss: loss values and every parameter gradient, on-
    and off-policy (old log-probs shifted by +-0.45, so clips and gates act on both sides);
  * scale_rewards="batch" against TRL's own generate-and-score step;
  * two gloo ranks: batch-std advantages, loss normalisers and diagnostics of the global batch.
Tolerances as tests/test_parity_trl.py (float32 round-off). Set SFTRL_PARITY_REPORT=path.json to
dump the achieved errors (benchmarks/README.md's parity table).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from datasets import Dataset, disable_progress_bars  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from reference_impls.core.diagnostics import clip_stats, micro_stats, rollout_stats  # noqa: E402
from reference_impls.core.logprobs import token_logprobs  # noqa: E402
from reference_impls.core.losses import aggregate  # noqa: E402
from reference_impls.core.pg import scaled_advantages  # noqa: E402
from reference_impls.methods.cispo import cispo_loss  # noqa: E402
from reference_impls.methods.gkd import gkd_loss  # noqa: E402
from reference_impls.methods.gmpo import gmpo_loss  # noqa: E402
from reference_impls.methods.grpo import grpo_loss  # noqa: E402
from reference_impls.methods.gspo import gspo_loss  # noqa: E402
from reference_impls.methods.sapo import sapo_loss  # noqa: E402
from reference_impls.testing import (  # noqa: E402
    crafted_grpo_batch,
    flat_grad,
    load_noisy,
    save_parity_tiny,
    trl_args,
)

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()
disable_progress_bars()
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

ROOT = Path(__file__).resolve().parents[1]
VALUE_RTOL, GRAD_RTOL, GRAD_ATOL = 5e-6, 5e-6, 1e-7  # as tests/test_parity_trl.py
ACHIEVED: dict[str, dict[str, float]] = {}
G, T = 8, 8  # completions (2 groups of 4), completion width


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_parity_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if out := os.environ.get("SFTRL_PARITY_REPORT"):
        old = json.loads(Path(out).read_text()) if Path(out).exists() else {}
        Path(out).write_text(json.dumps({**old, **ACHIEVED}, indent=1, sort_keys=True))


def compare(name: str, ours: torch.Tensor, ref: torch.Tensor, g_ours: torch.Tensor, g_ref: torch.Tensor) -> None:
    v_err, g_err, g_scale = abs(ours.item() - ref.item()), (g_ours - g_ref).abs().max().item(), g_ref.abs().max().item()
    ACHIEVED[name] = {"loss_ref": ref.item(), "value_rel_err": v_err / max(abs(ref.item()), 1e-12),
                      "grad_max_abs": g_scale, "grad_rel_err": g_err / max(g_scale, 1e-12)}
    assert g_scale > 0, f"{name}: the reference gradient is all zero, the comparison would be vacuous"
    assert v_err <= VALUE_RTOL * abs(ref.item()) + 1e-7, (name, ours.item(), ref.item())
    assert g_err <= GRAD_RTOL * g_scale + GRAD_ATOL, (name, g_err, g_scale)


def logps(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """log pi of each completion token, [G, T] (our scoring path: full logits, log_softmax)."""
    ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
    am = torch.cat([b["prompt_mask"], b["completion_mask"]], 1)
    return token_logprobs(model(input_ids=ids, attention_mask=am).logits, ids)[:, -T:]


def old_of(logp0: torch.Tensor, regime: str, seed: int = 1) -> torch.Tensor | None:
    if regime == "on-policy":
        return None
    return logp0 - (torch.rand(*logp0.shape, generator=torch.Generator().manual_seed(seed)) * 0.9 - 0.45)


# ------------------------------------------------------------------------------ verl's agg_loss
def verl_agg_loss(loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str) -> torch.Tensor:
    """verl/trainer/ppo/core_algos.py `agg_loss` (volcengine/verl@26b5d6b2), transcribed."""
    if loss_agg_mode == "token-mean":
        loss = (loss_mat * loss_mask).sum() / loss_mask.sum()  # verl_F.masked_mean
    elif loss_agg_mode == "seq-mean-token-sum":
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1)  # token-sum
        loss = torch.mean(seq_losses)  # seq-mean
    elif loss_agg_mode == "seq-mean-token-mean":
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1) / torch.sum(loss_mask, dim=-1)  # token-mean
        loss = torch.mean(seq_losses)  # seq-mean
    elif loss_agg_mode == "seq-mean-token-sum-norm":
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1)
        loss = torch.sum(seq_losses) / loss_mask.shape[-1]
    else:
        raise ValueError(loss_agg_mode)
    return loss


def verl_policy_loss(old_log_prob, log_prob, advantages, response_mask, cliprange_low, cliprange_high,
                     clip_ratio_c=3.0, loss_agg_mode="token-mean") -> torch.Tensor:
    """verl `compute_policy_loss` (dual-clip PPO), same commit, transcribed."""
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - cliprange_low, 1 + cliprange_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    return verl_agg_loss(pg_losses, response_mask, loss_agg_mode)


# verl mode -> (our aggregation, factor): verl = factor * ours, on B = 6 rows of width T = 8 (B != T,
# so that dividing by the rows and by the padded width are told apart)
B = 6
VERL = {"token-mean": ("token-mean", 1.0), "seq-mean-token-sum": ("seq-mean-token-sum", 1.0),
        "seq-mean-token-mean": ("seq-mean-token-mean", 1.0), "seq-mean-token-sum-norm": ("token-sum", 1 / T),
        "seq-mean-token-sum-norm/constant": ("constant", float(B))}


@pytest.mark.parametrize("regime", ["on-policy", "off-policy"])
@pytest.mark.parametrize("mode", list(VERL))
def test_every_aggregation_matches_verl(tiny_dir: Path, mode: str, regime: str) -> None:
    """grpo_loss(aggregation=ours) = verl's PPO policy loss with loss_agg_mode (values, gradients).
    verl's seq-mean-token-sum-norm divides the token sum by the padded width T: = our token-sum / T,
    and = our constant (sum / (B * T)) * B."""
    model = load_noisy(tiny_dir, noise=0.05)
    b = {k: v[:B] for k, v in crafted_grpo_batch(seed=11).items()}
    mask = b["completion_mask"].float()
    with torch.no_grad():
        old = old_of(logps(model, b), regime)
    logp = logps(model, b)
    old_ = logp.detach() if old is None else old
    ours_mode, factor = VERL[mode]
    ours, _ = grpo_loss(logp, old_, b["advantages"], mask, eps_low=0.2, eps_high=0.28,
                        aggregation=ours_mode, max_len=T)
    g_ours = flat_grad(model, ours * factor)
    logp = logps(model, b)
    old_ = logp.detach() if old is None else old
    A = b["advantages"].unsqueeze(-1).expand(B, T)  # verl: token-level advantages
    assert (-A * torch.exp(logp - old_)).max() < -A.min() * 3.0  # dual clip inactive: the PPO-clip loss
    ref = verl_policy_loss(old_, logp, A, mask, 0.2, 0.28, loss_agg_mode=mode.split("/")[0])
    compare(f"verl[{mode},{regime}]", ours * factor, ref, g_ours, flat_grad(model, ref))


def test_token_sum_is_seq_mean_token_sum_times_rows() -> None:
    """The two modes verl lacks by name, by hand: token-sum = B * seq-mean-token-sum; and a
    micro-batch split with global totals sums to the full-batch value for every mode."""
    g = torch.Generator().manual_seed(0)
    lt, m = torch.randn(6, 5, generator=g), (torch.rand(6, 5, generator=g) > 0.3).float()
    assert aggregate(lt, m, "token-sum").item() == pytest.approx(6 * aggregate(lt, m, "seq-mean-token-sum").item())
    for mode in ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "constant"):
        full = aggregate(lt, m, mode, 5)
        parts = sum(aggregate(lt[i:i + 2], m[i:i + 2], mode, 5, total_tokens=m.sum(), total_seqs=6)
                    for i in (0, 2, 4))
        assert parts.item() == pytest.approx(full.item(), rel=1e-6), mode


# ------------------------------------------------------------------------------ TRL loss types
def grpo_trainer(tiny_dir: Path, tmp: Path, trainer_cls=GRPOTrainer, config_cls=GRPOConfig, **cfg: Any):
    model = load_noisy(tiny_dir, noise=0.05)

    def reward(completions: list[str], r: list[float], **_: Any) -> list[float]:
        return list(r)

    args = config_cls(**trl_args(tmp), per_device_train_batch_size=G, num_generations=4,
                      max_completion_length=T, **cfg)
    ds = Dataset.from_dict({"prompt": ["1+2=", "33+40="], "r": [0.0, 0.0]})
    trainer = trainer_cls(model=model, reward_funcs=reward, args=args, train_dataset=ds,
                          processing_class=PreTrainedTokenizerFast.from_pretrained(tiny_dir))
    trainer.current_gradient_accumulation_steps = 1
    return trainer, model


def trl_vs_ours(trainer, model, regime: str, ours_fn, seed: int = 7):
    b = crafted_grpo_batch(seed=seed)
    with torch.no_grad():
        old = old_of(logps(model, b), regime)
    inputs: dict[str, Any] = dict(b, num_items_in_batch=b["completion_mask"].sum())
    if old is not None:
        inputs["old_per_token_logps"] = old
    loss_trl = trainer._compute_loss(model, inputs)
    g_trl = flat_grad(model, loss_trl)
    logp = logps(model, b)
    ours, stats = ours_fn(logp, logp.detach() if old is None else old, b["advantages"], b["completion_mask"].float())
    return ours, loss_trl, flat_grad(model, ours), g_trl, stats


REGIMES = ["on-policy", "off-policy"]


@pytest.mark.parametrize("regime", REGIMES)
def test_cispo_matches_trl(tiny_dir: Path, tmp_path: Path, regime: str) -> None:
    """TRL cispo: -clamp(r, max=epsilon_high).detach() A log pi, token mean. TRL's epsilon_high is
    the ratio cap itself: 1.2 here (tokens above it, A > 0, are capped), ours eps_high = 0.2."""
    trainer, model = grpo_trainer(tiny_dir, tmp_path, loss_type="cispo", epsilon_high=1.2, beta=0.0)
    ours, ref, g, g_ref, st = trl_vs_ours(trainer, model, regime, lambda *a: cispo_loss(*a, eps_high=0.2))
    compare(f"cispo[{regime}]", ours, ref, g, g_ref)
    if regime == "off-policy":
        assert st["clip_ratio_high"] > 0
        assert st["clip_ratio_high"] == pytest.approx(trainer._metrics["train"]["cispo_clip_ratio"][-1], abs=1e-6)


@pytest.mark.parametrize("regime", REGIMES)
def test_sapo_matches_trl(tiny_dir: Path, tmp_path: Path, regime: str) -> None:
    """TRL sapo: -sigmoid(tau (r - 1)) 4/tau A, tau by the sign of A, seq-mean-token-mean."""
    trainer, model = grpo_trainer(tiny_dir, tmp_path, loss_type="sapo", beta=0.0,
                                  sapo_temperature_pos=1.0, sapo_temperature_neg=1.7)
    ours, ref, g, g_ref, _ = trl_vs_ours(trainer, model, regime, lambda *a: sapo_loss(*a, tau_pos=1.0, tau_neg=1.7))
    compare(f"sapo[{regime}]", ours, ref, g, g_ref)


@pytest.mark.parametrize("regime", REGIMES)
def test_gmpo_matches_trl(tiny_dir: Path, tmp_path: Path, regime: str) -> None:
    """trl.experimental GMPOTrainer: -A exp(mean_t one-sided clip(log r)), mean over sequences."""
    from trl.experimental.gmpo import GMPOConfig, GMPOTrainer

    trainer, model = grpo_trainer(tiny_dir, tmp_path, GMPOTrainer, GMPOConfig, epsilon=0.3, beta=0.0)
    ours, ref, g, g_ref, st = trl_vs_ours(trainer, model, regime, lambda *a: gmpo_loss(*a, eps_low=0.3, eps_high=0.3))
    compare(f"gmpo[{regime}]", ours, ref, g, g_ref)
    m = trainer._metrics["train"]
    assert st["clip_ratio_low"] == pytest.approx(m["clip_ratio/low_mean"][-1], abs=1e-6)
    assert st["clip_ratio_high"] == pytest.approx(m["clip_ratio/high_mean"][-1], abs=1e-6)


@pytest.mark.parametrize("regime", REGIMES)
def test_luspo_is_gspo_with_seq_mean_token_sum(tiny_dir: Path, tmp_path: Path, regime: str) -> None:
    """TRL luspo (importance_sampling_level="sequence"): GSPO's sequence ratio and clip, the
    sequence loss summed over its tokens, mean over sequences = our gspo_loss(aggregation=
    "seq-mean-token-sum")."""
    trainer, model = grpo_trainer(tiny_dir, tmp_path, loss_type="luspo", importance_sampling_level="sequence",
                                  epsilon=0.02, epsilon_high=0.03, beta=0.0)
    ours, ref, g, g_ref, _ = trl_vs_ours(
        trainer, model, regime, lambda *a: gspo_loss(*a, eps_low=0.02, eps_high=0.03, aggregation="seq-mean-token-sum"))
    compare(f"gspo[seq-mean-token-sum]=luspo[{regime}]", ours, ref, g, g_ref)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_trl_clip_ratios_are_ours(tiny_dir: Path, tmp_path: Path, loss_type: str) -> None:
    """clip_ratio_low / _high (core/diagnostics.clip_stats) = TRL's clip_ratio/low_mean, /high_mean."""
    trainer, model = grpo_trainer(tiny_dir, tmp_path, loss_type=loss_type, epsilon_high=0.28, beta=0.0)
    _, _, _, _, st = trl_vs_ours(trainer, model, "off-policy", lambda *a: grpo_loss(*a, eps_low=0.2, eps_high=0.28))
    m = trainer._metrics["train"]
    assert st["clip_ratio_low"] > 0 and st["clip_ratio_high"] > 0
    assert st["clip_ratio_low"] == pytest.approx(m["clip_ratio/low_mean"][-1], abs=1e-6)
    assert st["clip_ratio_high"] == pytest.approx(m["clip_ratio/high_mean"][-1], abs=1e-6)


def test_batch_scaled_advantages_match_trl(tiny_dir: Path, tmp_path: Path) -> None:
    """TRL scale_rewards="batch": (r - mean_group) / (std over the whole batch + 1e-4), its own
    generate-and-score step; and frac_reward_zero_std as TRL logs it."""
    trainer, _ = grpo_trainer(tiny_dir, tmp_path, loss_type="dapo", scale_rewards="batch")
    rewards = [1.0, 1.0, 1.0, 1.0, 0.2, 0.9, -0.3, 0.5]  # group 1 all equal: zero std
    rows = [{"prompt": p, "r": r} for p, r in zip(["1+2="] * 4 + ["33+40="] * 4, rewards, strict=True)]
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(rows)
    ours = scaled_advantages(torch.tensor(rewards), 4, "batch")
    torch.testing.assert_close(ours, out["advantages"], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(ours, scaled_advantages(torch.tensor(rewards), 4, "group"))
    ACHIEVED["advantages[scale_rewards=batch]"] = {"abs_err": (ours - out["advantages"]).abs().max().item()}
    from reference_impls.core.diagnostics import zero_std_groups

    # frac_reward_zero_std: ours counts groups with equal rewards whatever the scaling; TRL's tests
    # the std it divides by (the batch's under "batch": 0 here). Under "group" the two agree:
    trainer, _ = grpo_trainer(tiny_dir, tmp_path, loss_type="dapo", scale_rewards="group")
    trainer._generate_and_score_completions(rows)
    assert zero_std_groups(ours, 4).float().mean().item() == 0.5 == trainer._metrics["train"]["frac_reward_zero_std"][-1]


# ------------------------------------------------------------------------------ GKD
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_gkd_matches_trl_generalized_jsd(tiny_dir: Path, beta: float) -> None:
    """GKDTrainer.generalized_jsd_loss (labels -100 off the completion, num_items_in_batch = its
    tokens) vs our gkd_loss, student and teacher = two different tiny models."""
    from trl.experimental.gkd import GKDTrainer

    student, teacher = load_noisy(tiny_dir, noise=0.05), load_noisy(tiny_dir, noise=0.2, seed=3)
    b = crafted_grpo_batch(seed=2)
    ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
    am = torch.cat([b["prompt_mask"], b["completion_mask"]], 1)
    labels = torch.where(torch.cat([torch.zeros_like(b["prompt_mask"]), b["completion_mask"]], 1).bool(), ids, -100)
    with torch.no_grad():
        t_logits = teacher(input_ids=ids, attention_mask=am).logits[:, :-1]
    mask = (labels[:, 1:] != -100).float()
    ref = GKDTrainer.generalized_jsd_loss(student(input_ids=ids, attention_mask=am).logits[:, :-1], t_logits,
                                          labels=labels[:, 1:], beta=beta, num_items_in_batch=mask.sum())
    g_ref = flat_grad(student, ref)
    ours = gkd_loss(student(input_ids=ids, attention_mask=am).logits[:, :-1], t_logits, mask, beta)
    compare(f"gkd[beta={beta}]", ours, ref, flat_grad(student, ours), g_ref)


def test_gkd_algo_loss_matches_trl(tiny_dir: Path, tmp_path: Path) -> None:
    """The training step's glue (gkd.Algo.loss: a teacher loaded from a path, position ids from the
    attention mask, global token count) against TRL's loss on the same batch."""
    from trl.experimental.gkd import GKDTrainer

    from reference_impls.methods import gkd
    from reference_impls.tasks.addition import Addition

    teacher_dir = tmp_path / "teacher"
    load_noisy(tiny_dir, noise=0.2, seed=3).save_pretrained(teacher_dir)
    PreTrainedTokenizerFast.from_pretrained(tiny_dir).save_pretrained(teacher_dir)
    student = load_noisy(tiny_dir, noise=0.05)
    algo = gkd.Algo(student, PreTrainedTokenizerFast.from_pretrained(tiny_dir), Addition(),
                    gkd.Config(teacher=str(teacher_dir), beta=0.3))
    b = crafted_grpo_batch(seed=4)
    ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
    am = torch.cat([b["prompt_mask"], b["completion_mask"]], 1)
    labels = torch.where(torch.cat([torch.zeros_like(b["prompt_mask"]), b["completion_mask"]], 1).bool(), ids, -100)
    mask = (labels[:, 1:] != -100).float()
    with torch.no_grad():
        t_logits = algo.teacher(input_ids=ids, attention_mask=am).logits[:, :-1]
    ref = GKDTrainer.generalized_jsd_loss(student(input_ids=ids, attention_mask=am).logits[:, :-1], t_logits,
                                          labels=labels[:, 1:], beta=0.3, num_items_in_batch=mask.sum())
    g_ref = flat_grad(student, ref)
    micro = {"input_ids": ids, "attention_mask": am, "mask": mask}
    ours, _ = algo.loss(micro, {"rows": G, "tokens": mask.sum()})
    compare("gkd[beta=0.3,Algo.loss]", ours, ref, flat_grad(student, ours), g_ref)
    assert micro["_entropy"].shape == mask.shape  # the entropy diagnostic's input


def test_report_to_and_diagnostics_in_a_run(tmp_path: Path) -> None:
    """`--report-to jsonl,tensorboard` writes each step under the run folder; the history has the
    diagnostics; the knobs reach the method; a bad tracker name is one clear error."""
    from reference_impls import runner

    r = runner.run("grpo", steps=2, out=tmp_path, progress=False, report_to="jsonl,tensorboard",
                   aggregation="seq-mean-token-sum", scale_rewards="batch")
    assert r.status == "finished" and r.config["aggregation"] == "seq-mean-token-sum"
    rdir = tmp_path / r.id
    lines = [json.loads(x) for x in (rdir / "metrics.jsonl").read_text().splitlines()]
    assert [x["global_step"] for x in lines] == [0, 1] and lines[1]["loss"] == r.history[-1]["loss"]
    assert list((rdir / "tensorboard").glob("events.out.tfevents.*"))
    for k in ("frac_reward_zero_std", "entropy", "kl", "clip_ratio_low", "clip_ratio_high",
              "completion_len", "completion_len_max", "truncated_frac"):
        assert all(k in h for h in r.history), k
    with pytest.raises(runner.UsageError, match="unknown tracker 'wandb'"):
        runner.run("grpo", steps=1, out=tmp_path, progress=False, report_to="wandb")


def test_on_policy_sapo_and_gmpo_train_as_grpo_without_kl(tmp_path: Path) -> None:
    """With one update per batch (ratio 1) SAPO's gate has slope f'(1) = 1 and GMPO's weight is 1:
    both take GRPO's step (beta = 0, seq-mean-token-mean), so two steps of each move the weights
    alike (same seed, same samples) while their loss values differ; CISPO (token-mean) does not."""
    from reference_impls import runner

    runs = {m: runner.run(m, steps=2, out=tmp_path, progress=False, **kw)
            for m, kw in (("grpo", {"beta": 0.0}), ("sapo", {}), ("gmpo", {}), ("cispo", {}))}
    norms = {m: [h["grad_norm"] for h in r.history] for m, r in runs.items()}
    assert norms["sapo"] == pytest.approx(norms["grpo"], rel=1e-5) == norms["gmpo"]
    assert norms["cispo"] != pytest.approx(norms["grpo"], rel=1e-3)
    assert runs["sapo"].history[0]["loss"] != pytest.approx(runs["gmpo"].history[0]["loss"])


# ------------------------------------------------------------------------------ diagnostics
def test_clip_stats_and_rollout_stats_by_hand() -> None:
    r = torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.5, 1.0]])
    A, m = torch.tensor([-1.0, 1.0]), torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    st = clip_stats(r, A, m, 0.8, 1.2)  # low: row 0 token 0; high: row 1 token 1 (token 2 masked)
    assert (st["clip_ratio_low"], st["clip_ratio_high"]) == (pytest.approx(1 / 5), pytest.approx(1 / 5))
    ent = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # entropy: additive over micro-batches
    parts = [micro_stats({"_entropy": ent[i:i + 1], "mask": m[i:i + 1]}, {"tokens": m.sum()}) for i in (0, 1)]
    assert sum(p["entropy"] for p in parts) == pytest.approx((1 + 2 + 3 + 4 + 5) / 5)

    class Cfg:
        max_new_tokens, group_size = 3, 2

    class Tok:
        eos_token_id = 1

    algo = type("A", (), {"cfg": Cfg(), "tok": Tok()})()
    ids = torch.tensor([[5, 7, 1, 0], [5, 7, 7, 7], [5, 1, 0, 0], [5, 7, 1, 0]])  # prompt 5, EOS 1
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]]).float()
    out = rollout_stats({"input_ids": ids, "mask": mask, "advantages": torch.tensor([0.0, 0.0, 0.0, 0.5])}, algo)  # one group all 0
    assert out == {"completion_len": 2.0, "completion_len_max": 3.0, "truncated_frac": 0.25,
                   "frac_reward_zero_std": 0.5}


# ------------------------------------------------------------------------------ two gloo ranks
def worker(out: Path) -> None:
    """Rank r holds rows [4r, 4r + 4) of a fixed batch: advantages, loss shares, diagnostics."""
    sys.path.insert(0, str(ROOT))
    from reference_impls.core import distributed

    distributed.init("cpu")
    r = distributed.rank()
    rewards, lt, m, ids, adv = _global_batch()
    rows = slice(4 * r, 4 * r + 4)
    with distributed.collecting():
        a = scaled_advantages(rewards[rows], 2, "batch")
    totals = {"tokens": distributed.all_sum(m[rows].sum()), "rows": int(distributed.all_sum(4).item())}
    losses = {mode: distributed.all_sum(aggregate(lt[rows], m[rows], mode, 3, total_tokens=totals["tokens"],
                                                  total_seqs=totals["rows"])).item()
              for mode in ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "constant")}
    algo = type("A", (), {"cfg": type("C", (), {"max_new_tokens": 3, "group_size": 2})(),
                          "tok": type("T", (), {"eos_token_id": 1})()})()
    diag = rollout_stats({"input_ids": ids[rows], "mask": m[rows], "advantages": adv[rows]}, algo)
    torch.save({"adv": a, "losses": losses, "diag": diag}, out / f"rank{r}.pt")


def _global_batch():
    g = torch.Generator().manual_seed(5)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.3, 0.9, 0.0, 0.0])  # 4 groups of 2, over 2 ranks
    lt = torch.randn(8, 3, generator=g)
    lengths = torch.tensor([3, 1, 2, 3, 1, 2, 2, 3])
    m = (torch.arange(3)[None] < lengths[:, None]).float()
    ids = torch.full((8, 4), 7)
    ids[torch.arange(8), lengths] = 1  # EOS last ...
    ids[7, 3] = 7  # ... except row 7 (truncated, on rank 1)
    adv = torch.tensor([0.5, -0.5, 0.0, 0.0, 0.1, -0.1, 0.0, 0.0])  # zero-std groups: 1 on rank 0, 1 on rank 1
    return rewards, lt, m, ids, adv


def test_two_ranks_use_the_global_batch(tmp_path: Path) -> None:
    """Each of 2 gloo ranks holds half the batch: batch-std advantages, the sum of the ranks' loss
    shares and the diagnostics equal the one-process values of the whole batch."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        __file__, str(tmp_path)], capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    rank = [torch.load(tmp_path / f"rank{k}.pt") for k in (0, 1)]
    rewards, lt, m, ids, adv = _global_batch()
    torch.testing.assert_close(torch.cat([x["adv"] for x in rank]), scaled_advantages(rewards, 2, "batch"))
    assert not torch.allclose(rank[0]["adv"], scaled_advantages(rewards[:4], 2, "batch"))  # not the rank's std
    for mode, v in rank[0]["losses"].items():
        assert v == pytest.approx(aggregate(lt, m, mode, 3).item(), rel=1e-6), mode
    cfg = type("C", (), {"max_new_tokens": 3, "group_size": 2})()
    one = rollout_stats({"input_ids": ids, "mask": m, "advantages": adv},
                        type("A", (), {"cfg": cfg, "tok": type("T", (), {"eos_token_id": 1})()})())
    assert rank[0]["diag"] == rank[1]["diag"] == pytest.approx(one)
    assert one["truncated_frac"] == 1 / 8 and one["frac_reward_zero_std"] == 0.5


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
