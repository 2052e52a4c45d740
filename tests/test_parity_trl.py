"""Peer parity: our reference losses against TRL 1.16's own trainers, on identical model and batch.

Each test builds one TRL trainer around a tiny local Llama (2 layers x 64 wide, char-level tokenizer,
no hub), takes a batch that TRL's own collator (or generation step) produced, and computes
  (a) TRL's loss with the trainer's own `compute_loss` / `_compute_loss` (fused LM head), and
  (b) ours: `model(...).logits` -> `token_logprobs` -> our loss function,
then compares loss values AND the full parameter gradients.

Tolerances are float32 round-off only (TRL scores tokens through a chunked fused LM head, we take
log_softmax of full logits): value |ours - trl| <= 5e-6 |trl| + 1e-7, gradient
max|g_ours - g_trl| <= 5e-6 max|g_trl| + 1e-7. Achieved (torch 2.13 CPU, fp32): values within
4.6e-7 relative (most bit-identical), gradients within 5.8e-7 of max|g_trl| -- per-case table in
benchmarks/README.md. Set SFTRL_PARITY_REPORT=path.json to dump the achieved errors.

Conventions that differ from TRL and how they are aligned here (also listed in benchmarks/README.md):
  * DPO `ipo`: TRL divides each sequence's summed log-ratio by its completion length (after
    confirming with the IPO authors); ours follows Azar et al. on summed log-ratios. We feed our
    `dpo_loss` length-normalised log-probs to match, and check that the raw forms do differ.
  * DPO `label_smoothing`: TRL 1.16's `sigmoid` ignores it (it only drives `robust`/`exo_pair`);
    ours is conservative DPO. Compared at label_smoothing = 0 only.
  * GRPO `use_bias_correction_kl` (TRL default True): TRL multiplies k3 by the importance ratio r.
    Ours is plain k3 (the GRPO paper). Compared with it False; with True we check
    TRL = ours + beta * agg(k3 * (r - 1)), which has value 0 but a non-zero gradient at r = 1.
  * GRPO loss names: TRL "dapo"/"bnpo" = our "token-mean", "grpo" = "seq-mean-token-mean",
    "dr_grpo" = "constant" with max_len = max_completion_length.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402  (trl and datasets are test dependencies: a missing one must fail, not skip)
from datasets import Dataset, disable_progress_bars  # noqa: E402
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import (  # noqa: E402
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    SFTConfig,
    SFTTrainer,
)

from reference_impls.core.logprobs import token_logprobs  # noqa: E402
from reference_impls.core.losses import aggregate, group_advantages, kl_estimate  # noqa: E402
from reference_impls.methods.dpo import dpo_loss  # noqa: E402
from reference_impls.methods.grpo import grpo_loss  # noqa: E402
from reference_impls.methods.sft import sft_loss  # noqa: E402
from reference_impls.tasks.addition import Addition  # noqa: E402
from reference_impls.testing import (  # noqa: F401
    crafted_grpo_batch,
    flat_grad,
    load_noisy,
    save_parity_tiny,
    trl_args,
)

hf_logging.disable_progress_bar()
disable_progress_bars()
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers 5 deprecation noise
hf_logging.set_verbosity_error()

VALUE_RTOL = 5e-6  # relative tolerance on loss values (achieved <= 4.6e-7)
GRAD_RTOL = 5e-6  # |g_ours - g_trl|_inf <= GRAD_RTOL * |g_trl|_inf + GRAD_ATOL (achieved <= 5.8e-7)
GRAD_ATOL = 1e-7
ACHIEVED: dict[str, dict[str, float]] = {}  # test id -> achieved errors (for the report)



# ---------------------------------------------------------------- tiny model, tokenizer, helpers


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parity tests' tiny model (reference_impls.testing.save_parity_tiny), saved once."""
    return save_parity_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if out := os.environ.get("SFTRL_PARITY_REPORT"):
        Path(out).write_text(json.dumps(ACHIEVED, indent=1, sort_keys=True))


load = load_noisy


def tokenizer(path: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(path)


common_args = trl_args




def compare(
    name: str, loss_ours: torch.Tensor, loss_trl: torch.Tensor, g_ours: torch.Tensor, g_trl: torch.Tensor
) -> None:
    """Assert value and gradient parity; record the achieved errors."""
    v_err = abs(loss_ours.item() - loss_trl.item())
    g_scale = g_trl.abs().max().item()
    g_err = (g_ours - g_trl).abs().max().item()
    ACHIEVED[name] = {
        "loss_trl": loss_trl.item(),
        "value_abs_err": v_err,
        "value_rel_err": v_err / max(abs(loss_trl.item()), 1e-12),
        "grad_max_abs": g_scale,
        "grad_abs_err": g_err,
        "grad_rel_err": g_err / max(g_scale, 1e-12),
    }
    assert g_scale > 0, f"{name}: TRL gradient is all zero, the comparison would be vacuous"
    assert v_err <= VALUE_RTOL * abs(loss_trl.item()) + 1e-7, (name, loss_ours.item(), loss_trl.item())
    assert g_err <= GRAD_RTOL * g_scale + GRAD_ATOL, (name, g_err, g_scale)


def our_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Our scoring path: full logits -> token_logprobs -> [B, T-1] (position t scores token t+1)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B, T, V]
    return token_logprobs(logits, batch["input_ids"], temperature)


# ------------------------------------------------------------------------------------------- SFT
SFT_DATA = {
    "prompt": ["1+2=", "33+4=", "5+6=", "7+80=", "12+9=", "4+4="],
    "completion": ["3", "37", "11", "87", "21", "8"],
}


@pytest.mark.parametrize("completion_only", [True, False])
def test_sft_matches_trl(tiny_dir: Path, tmp_path: Path, completion_only: bool) -> None:
    """TRL SFT (completion-only loss by default on prompt/completion data) vs our sft_loss.

    TRL: loss = -sum_t log p(y_t) over label != -100 / #such tokens (a global token mean).
    Ours: sft_loss(token_logprobs, mask) with mask = labels[:, 1:] != -100 (shifted like logp).
    """
    model = load(tiny_dir)
    args = SFTConfig(**common_args(tmp_path), per_device_train_batch_size=6, completion_only_loss=completion_only)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(SFT_DATA), processing_class=tokenizer(tiny_dir)
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])  # right-padded [B, T]
    if completion_only:  # every row has its prompt masked out of the labels
        assert (batch["labels"] == -100).any(dim=1).all()

    loss_trl = trainer.compute_loss(model, dict(batch))
    g_trl = flat_grad(model, loss_trl)

    mask = (batch["labels"][:, 1:] != -100).float()  # [B, T-1]: which next tokens are trained on
    assert mask.sum() < batch["attention_mask"][:, 1:].sum() if completion_only else True
    loss_ours = sft_loss(our_logps(model, batch), mask)
    g_ours = flat_grad(model, loss_ours)
    compare(f"sft[completion_only={completion_only}]", loss_ours, loss_trl, g_ours, g_trl)


# ------------------------------------------------------------------------------------------- DPO
DPO_DATA = {
    "prompt": ["1+2=", "33+4=", "5+6=", "7+80=", "9+9=", "40+2="],
    "chosen": ["3", "37", "11", "87", "18", "42"],
    "rejected": ["4", "38x", "12", "8", "19 and", "4"],
}


def dpo_setup(
    tiny_dir: Path, tmp: Path, loss_type: str, beta: float
) -> tuple[DPOTrainer, LlamaForCausalLM, dict[str, torch.Tensor]]:
    policy = load(tiny_dir, noise=0.05)  # policy != reference so the log-ratios are non-zero
    ref = load(tiny_dir)
    args = DPOConfig(**common_args(tmp), per_device_train_batch_size=6, loss_type=[loss_type], beta=beta)
    trainer = DPOTrainer(
        model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_dict(DPO_DATA),
        processing_class=tokenizer(tiny_dir),
    )  # fmt: skip
    assert not trainer.precompute_ref_logps
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])  # [chosen; rejected]
    return trainer, policy, batch


def our_dpo_inputs(
    trainer: DPOTrainer, policy: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """Summed completion log-probs: pi_c, pi_r (with grad), ref_c, ref_r [B] each; lengths [2B]."""
    mask = batch["completion_mask"][:, 1:].float()  # [2B, T-1]
    pi = (our_logps(policy, batch) * mask).sum(-1)  # [2B] = sum_t log pi(y_t | x, y_<t)
    with torch.no_grad():
        ref = (our_logps(trainer.ref_model, batch) * mask).sum(-1)  # [2B]
    pi_c, pi_r = pi.chunk(2)
    ref_c, ref_r = ref.chunk(2)
    return pi_c, pi_r, ref_c, ref_r, mask.sum(-1)


@pytest.mark.parametrize(
    ("loss_type", "beta"),
    [("sigmoid", 0.1), ("sigmoid", 2.0), ("hinge", 0.1), ("hinge", 3.0), ("ipo", 0.1), ("ipo", 1.0)],
)
def test_dpo_matches_trl(tiny_dir: Path, tmp_path: Path, loss_type: str, beta: float) -> None:
    """DPOTrainer._compute_loss vs our dpo_loss on the same pairs; rewards too.

    TRL: h = (pi_c - ref_c) - (pi_r - ref_r) on summed completion log-probs;
    sigmoid: -log sigma(beta h); hinge: relu(1 - beta h); ipo: (h_norm - 1/(2 beta))^2 with each
    log-ratio divided by its completion length. Mean over pairs.
    """
    trainer, policy, batch = dpo_setup(tiny_dir, tmp_path, loss_type, beta)
    loss_trl = trainer.compute_loss(policy, dict(batch))
    g_trl = flat_grad(policy, loss_trl)
    metrics = trainer._metrics["train"]

    pi_c, pi_r, ref_c, ref_r, lengths = our_dpo_inputs(trainer, policy, batch)
    if loss_type == "ipo":  # align: TRL's ipo length-normalises each log-ratio (see module docstring)
        len_c, len_r = lengths.chunk(2)
        args = (pi_c / len_c, pi_r / len_r, ref_c / len_c, ref_r / len_r)
    else:
        args = (pi_c, pi_r, ref_c, ref_r)
    loss_ours, chosen_rewards, rejected_rewards = dpo_loss(*args, beta=beta, loss_type=loss_type)
    g_ours = flat_grad(policy, loss_ours)
    compare(f"dpo[{loss_type},beta={beta}]", loss_ours, loss_trl, g_ours, g_trl)

    if loss_type == "hinge" and beta == 3.0:  # the margin is hit by some pairs, not by all
        h = beta * ((pi_c - ref_c) - (pi_r - ref_r))
        assert (h > 1).any() and (h < 1).any(), h
    if loss_type != "ipo":  # TRL logs beta * summed log-ratio as the reward
        assert chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"][-1], rel=1e-5, abs=1e-7)
        assert rejected_rewards.mean().item() == pytest.approx(metrics["rewards/rejected"][-1], rel=1e-5, abs=1e-7)


def test_dpo_ipo_unnormalised_differs_from_trl(tiny_dir: Path, tmp_path: Path) -> None:
    """Ours on summed log-ratios (Azar et al.) is NOT TRL's length-normalised ipo: documents the gap."""
    trainer, policy, batch = dpo_setup(tiny_dir, tmp_path, "ipo", 0.1)
    with torch.no_grad():
        loss_trl = trainer.compute_loss(policy, dict(batch))
        pi_c, pi_r, ref_c, ref_r, lengths = our_dpo_inputs(trainer, policy, batch)
        loss_raw, _, _ = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=0.1, loss_type="ipo")
    assert lengths.min() > 1  # every completion has >1 token, so normalisation changes h
    assert abs(loss_raw.item() - loss_trl.item()) > 1e-3 * abs(loss_trl.item())


# ------------------------------------------------------------------------------------------ GRPO
G, P, T = 8, 6, 8  # completions (2 groups of 4), prompt width (left-padded), completion width
TRL_TO_OURS = {"dapo": "token-mean", "bnpo": "token-mean", "grpo": "seq-mean-token-mean", "dr_grpo": "constant"}


def grpo_trainer(tiny_dir: Path, tmp: Path, **cfg: Any) -> tuple[GRPOTrainer, LlamaForCausalLM]:
    model = load(tiny_dir, noise=0.05)

    def reward(completions: list[str], r: list[float], **_: Any) -> list[float]:
        return list(r)  # rewards come from the batch itself, so the test controls them

    args = GRPOConfig(
        **common_args(tmp), per_device_train_batch_size=G, num_generations=4,
        max_completion_length=T, epsilon=0.2, **cfg,
    )  # fmt: skip
    ds = Dataset.from_dict({"prompt": ["1+2=", "33+40="], "r": [0.0, 0.0]})
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tokenizer(tiny_dir)
    )
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's train loop; no accumulation here
    return trainer, model


grpo_batch = crafted_grpo_batch  # reference_impls.testing


def our_grpo_logps(model: torch.nn.Module, b: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """log pi of each completion token: [G, T] (the last T positions of the [G, P+T-1] scores)."""
    full = {
        "input_ids": torch.cat([b["prompt_ids"], b["completion_ids"]], 1),
        "attention_mask": torch.cat([b["prompt_mask"], b["completion_mask"]], 1),
    }
    return our_logps(model, full, temperature)[:, -T:]  # [G, T]


GRPO_CASES = [  # (TRL loss_type, regime, beta)
    ("dapo", "on-policy", 0.0), ("bnpo", "on-policy", 0.0), ("grpo", "on-policy", 0.0),
    ("dr_grpo", "on-policy", 0.0),
    ("dapo", "off-policy", 0.04), ("grpo", "off-policy", 0.04), ("dr_grpo", "off-policy", 0.04),
    ("grpo", "on-policy", 0.1),
]  # fmt: skip


@pytest.mark.parametrize(("loss_type", "regime", "beta"), GRPO_CASES)
def test_grpo_matches_trl(tiny_dir: Path, tmp_path: Path, loss_type: str, regime: str, beta: float) -> None:
    """GRPOTrainer._compute_loss vs our grpo_loss on a crafted batch.

    on-policy (num_iterations=1): TRL uses old = logp.detach(), so r = 1 and the value is
    -agg(A) (+ beta k3); the gradient agg(-A grad logp) is what must match.
    off-policy: old = logp - delta, delta in +-0.45, so r = exp(delta) lands outside
    [1 - 0.2, 1 + 0.28] on both sides (DAPO clip-higher eps_high = 0.28); k3 with beta > 0.
    """
    trainer, model = grpo_trainer(
        tiny_dir, tmp_path, loss_type=loss_type, beta=beta, epsilon_high=0.28, use_bias_correction_kl=False
    )
    b = grpo_batch()
    mask = b["completion_mask"].float()  # [G, T]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        logp0 = our_grpo_logps(model, b)  # [G, T] current policy, for crafting old/ref
    inputs: dict[str, Any] = dict(b, num_items_in_batch=b["completion_mask"].sum())
    old = logp0.clone()
    if regime == "off-policy":
        old = logp0 - (torch.rand(G, T, generator=g) * 0.9 - 0.45)  # r = exp(logp - old)
        inputs["old_per_token_logps"] = old
        r = torch.exp(logp0 - old)
        valid = mask.bool()
        assert (r[valid] < 0.8).any() and (r[valid] > 1.28).any()  # clipping active on both sides
    ref = logp0 + (torch.rand(G, T, generator=g) * 0.6 - 0.3)  # [G, T] reference log-probs
    if beta:
        inputs["ref_per_token_logps"] = ref

    loss_trl = trainer._compute_loss(model, inputs)
    g_trl = flat_grad(model, loss_trl)

    logp = our_grpo_logps(model, b)
    if regime == "on-policy":
        old = logp.detach()  # r = 1, as TRL does with num_iterations = 1
    loss_ours, _ = grpo_loss(
        logp, old, b["advantages"], mask, ref_logp=ref if beta else None, eps_low=0.2, eps_high=0.28,
        beta=beta, aggregation=TRL_TO_OURS[loss_type], max_len=T,
    )  # fmt: skip
    g_ours = flat_grad(model, loss_ours)
    compare(f"grpo[{loss_type},{regime},beta={beta}]", loss_ours, loss_trl, g_ours, g_trl)


@pytest.mark.parametrize("regime", ["on-policy", "off-policy"])
def test_grpo_bias_corrected_kl_is_ours_plus_ratio_term(tiny_dir: Path, tmp_path: Path, regime: str) -> None:
    """TRL's default use_bias_correction_kl=True: per-token KL = k3 * r. So
    TRL = ours + beta * agg(k3 * (r - 1)); at r = 1 the value matches but the gradient gains
    beta * agg(k3 * grad logp) -- checked both ways."""
    beta = 0.5
    trainer, model = grpo_trainer(tiny_dir, tmp_path, loss_type="dapo", beta=beta, epsilon_high=0.28)
    assert trainer.args.use_bias_correction_kl  # the TRL 1.16 default
    b = grpo_batch(seed=3)
    mask = b["completion_mask"].float()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        logp0 = our_grpo_logps(model, b)
    ref = logp0 + (torch.rand(G, T, generator=g) * 0.6 - 0.3)
    inputs: dict[str, Any] = dict(b, num_items_in_batch=b["completion_mask"].sum(), ref_per_token_logps=ref)
    if regime == "off-policy":
        inputs["old_per_token_logps"] = logp0 - (torch.rand(G, T, generator=g) * 0.9 - 0.45)
    loss_trl = trainer._compute_loss(model, inputs)
    g_trl = flat_grad(model, loss_trl)

    logp = our_grpo_logps(model, b)
    old = inputs.get("old_per_token_logps", logp.detach())
    plain, _ = grpo_loss(logp, old, b["advantages"], mask, ref_logp=ref, eps_low=0.2, eps_high=0.28,
                         beta=beta, aggregation="token-mean")  # fmt: skip
    g_plain = flat_grad(model, plain)
    assert (g_plain - g_trl).abs().max() > 1e-3 * g_trl.abs().max()  # the correction changes the gradient

    logp = our_grpo_logps(model, b)
    plain, _ = grpo_loss(logp, old, b["advantages"], mask, ref_logp=ref, eps_low=0.2, eps_high=0.28,
                         beta=beta, aggregation="token-mean")  # fmt: skip
    r = torch.exp(logp - old)  # [G, T] importance ratio (=1 in value on-policy, grad of logp)
    corrected = plain + beta * aggregate(kl_estimate(logp, ref, "k3") * (r - 1), mask, "token-mean")
    compare(f"grpo[dapo,{regime},bias_corrected_kl]", corrected, loss_trl, flat_grad(model, corrected), g_trl)


def test_grpo_temperature_matches_trl(tiny_dir: Path, tmp_path: Path) -> None:
    """TRL scores with logits / temperature (fused head); our token_logprobs(..., temperature)."""
    trainer, model = grpo_trainer(tiny_dir, tmp_path, loss_type="grpo", beta=0.0, temperature=0.7)
    b = grpo_batch(seed=5)
    loss_trl = trainer._compute_loss(model, dict(b, num_items_in_batch=b["completion_mask"].sum()))
    g_trl = flat_grad(model, loss_trl)
    logp = our_grpo_logps(model, b, temperature=0.7)
    loss_ours, _ = grpo_loss(logp, logp.detach(), b["advantages"], b["completion_mask"].float(),
                             aggregation="seq-mean-token-mean")  # fmt: skip
    compare("grpo[grpo,temperature=0.7]", loss_ours, loss_trl, flat_grad(model, loss_ours), g_trl)


@pytest.mark.parametrize(("scale_rewards", "ours_scale"), [("group", "std"), ("none", "none")])
def test_grpo_advantages_match_trl(tiny_dir: Path, tmp_path: Path, scale_rewards: str, ours_scale: str) -> None:
    """TRL's own generate-and-score step (real sampling, 8 new tokens) vs our group_advantages.

    TRL: A = (r - mean_g r) / (std_g r + 1e-4) with the Bessel-corrected (unbiased) std
    (trl.trainer.utils.nanstd); scale_rewards="none": A = r - mean_g r (Dr. GRPO).
    """
    trainer, _ = grpo_trainer(tiny_dir, tmp_path, loss_type="dapo", scale_rewards=scale_rewards)
    rewards = [1.0, 0.0, 0.0, 1.0, 0.2, 0.9, -0.3, 0.5]  # [G]: group 1 then group 2
    rows = [{"prompt": p, "r": r} for p, r in zip(["1+2="] * 4 + ["33+40="] * 4, rewards, strict=True)]
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(rows)
    adv_ours = group_advantages(torch.tensor(rewards), 4, scale=ours_scale, eps=1e-4)
    torch.testing.assert_close(adv_ours, out["advantages"], rtol=1e-6, atol=1e-6)
    ACHIEVED[f"grpo_advantages[{scale_rewards}]"] = {
        "abs_err": (adv_ours - out["advantages"]).abs().max().item()
    }


# ------------------------------------------------- our training-step losses (Algo.loss) vs TRL
# The tests above call our pure loss functions; these call each method's `Algo.loss`, i.e. the
# glue the training loop runs: its batch layout, `sequence_logprobs` (position ids from the
# attention mask, where TRL's forward uses 0..T-1 -- identical for RoPE up to round-off, as
# relative positions are unchanged), mask shifting and the whole-batch `totals` normalisers.
def algo(method: str, model: torch.nn.Module, tiny_dir: Path, **cfg: Any) -> Any:
    mod = importlib.import_module(f"reference_impls.methods.{method}")
    if not hasattr(mod, "Algo"):
        pytest.skip(f"reference_impls.methods.{method}.Algo does not exist yet")
    task = Addition()
    return mod.Algo(model, tokenizer(tiny_dir), task, mod.Config(**cfg))


def totals_of(mask: torch.Tensor) -> dict[str, Any]:
    return {"rows": mask.shape[0], "tokens": mask.sum()}


def test_sft_algo_loss_matches_trl(tiny_dir: Path, tmp_path: Path) -> None:
    model = load(tiny_dir)
    args = SFTConfig(**common_args(tmp_path), per_device_train_batch_size=6)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(SFT_DATA), processing_class=tokenizer(tiny_dir)
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    loss_trl = trainer.compute_loss(model, dict(batch))
    g_trl = flat_grad(model, loss_trl)
    sft = algo("sft", model, tiny_dir)
    micro = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
             "mask": (batch["labels"][:, 1:] != -100).float()}  # fmt: skip
    loss_ours, _ = sft.loss(micro, totals_of(micro["mask"]))
    compare("sft[Algo.loss]", loss_ours, loss_trl, flat_grad(model, loss_ours), g_trl)


@pytest.mark.parametrize(("loss_type", "beta"), [("sigmoid", 0.1), ("hinge", 3.0)])
def test_dpo_algo_loss_matches_trl(tiny_dir: Path, tmp_path: Path, loss_type: str, beta: float) -> None:
    trainer, policy, batch = dpo_setup(tiny_dir, tmp_path, loss_type, beta)
    loss_trl = trainer.compute_loss(policy, dict(batch))
    g_trl = flat_grad(policy, loss_trl)
    _, _, ref_c, ref_r, _ = our_dpo_inputs(trainer, policy, batch)
    dpo = algo("dpo", policy, tiny_dir, beta=beta, loss_type=loss_type)
    micro: dict[str, torch.Tensor] = {"ref_chosen": ref_c, "ref_rejected": ref_r}
    for name, half in zip(("chosen", "rejected"), range(2), strict=True):
        rows = slice(half * 6, (half + 1) * 6)  # TRL's batch is [chosen; rejected]
        micro[f"{name}_input_ids"] = batch["input_ids"][rows]
        micro[f"{name}_attention_mask"] = batch["attention_mask"][rows]
        micro[f"{name}_mask"] = batch["completion_mask"][rows, 1:].float()
    loss_ours, _ = dpo.loss(micro, {"rows": 6})
    compare(f"dpo[{loss_type},beta={beta},Algo.loss]", loss_ours, loss_trl, flat_grad(policy, loss_ours), g_trl)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_grpo_algo_loss_matches_trl(tiny_dir: Path, tmp_path: Path, loss_type: str) -> None:
    """num_iterations = 1 (TRL) = updates_per_batch = 1 (ours); beta = 0.04 with plain k3."""
    beta = 0.04
    trainer, model = grpo_trainer(
        tiny_dir, tmp_path, loss_type=loss_type, beta=beta, epsilon_high=0.28, use_bias_correction_kl=False
    )
    b = grpo_batch(seed=7)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        logp0 = our_grpo_logps(model, b)
    ref = logp0 + (torch.rand(G, T, generator=g) * 0.6 - 0.3)  # [G, T]
    loss_trl = trainer._compute_loss(
        model, dict(b, num_items_in_batch=b["completion_mask"].sum(), ref_per_token_logps=ref)
    )
    g_trl = flat_grad(model, loss_trl)
    grpo = algo("grpo", model, tiny_dir, beta=beta, eps_high=0.28, aggregation=TRL_TO_OURS[loss_type],
                max_new_tokens=T, group_size=4)  # fmt: skip
    pad = torch.zeros(G, P - 1)  # our per-token tensors span [G, P+T-1]; the prompt part is masked
    micro = {
        "input_ids": torch.cat([b["prompt_ids"], b["completion_ids"]], 1),
        "attention_mask": torch.cat([b["prompt_mask"], b["completion_mask"]], 1),
        "mask": torch.cat([pad, b["completion_mask"].float()], 1),  # [G, P+T-1]
        "advantages": b["advantages"], "ref_logp": torch.cat([pad, ref], 1),
    }  # fmt: skip
    loss_ours, _ = grpo.loss(micro, totals_of(micro["mask"]))
    compare(f"grpo[{loss_type},Algo.loss]", loss_ours, loss_trl, flat_grad(model, loss_ours), g_trl)
