"""The training diagnostics an RL user watches, computed in one place for every method.

Names follow TRL's GRPOTrainer logs (`frac_reward_zero_std`, `clip_ratio/{low,high}_mean`,
`entropy`, `kl`, `completions/mean_length`, `completions/clipped_ratio`), written with `_`:

  rollout (core/train.py, after `collect`, for methods that sample: a batch with a completion
  `mask` and a Config with `max_new_tokens`; a method's own value of the same key wins)
    completion_len         mean completion tokens per row (EOS included)
    completion_len_max     longest completion of the step
    truncated_frac         rows whose completion has no EOS (cut at the token budget)
    frac_reward_zero_std   groups whose rewards are all equal (every advantage 0: no signal);
                           methods with one advantage per row [B] and a `group_size`
  policy (core/train.py, after each micro-batch's `loss`; additive over micro-batches)
    entropy                token mean of H(pi_theta(.|x, y_<t)) over completion tokens, where the
                           method's loss left the per-token entropy in `micro["_entropy"]`
    clip_ratio_low/high    `clip_stats`, called by the losses that clip a token ratio
    kl                     k3 to the reference, where a method keeps one (its loss logs it)

Under torchrun every statistic is the global batch's: counts are all-reduced here, so the
loop's rank average of `collect` statistics leaves them unchanged; token means divide by the
global token count `totals["tokens"]`.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import Tensor

from reference_impls.core import distributed as dist


def truncated(batch: dict[str, Tensor], eos_id: int) -> Tensor:
    """Rows whose completion did not end with EOS (cut at the token budget).   -> bool [B]"""
    ids = batch["input_ids"][:, 1:]  # scored tokens, aligned with mask [B, T-1]
    last = (batch["mask"] * torch.arange(1, ids.shape[1] + 1, device=ids.device)).argmax(-1)  # [B]
    return ids[torch.arange(len(ids)), last] != eos_id


def _global_mean(total: float, count: float) -> float:
    s = dist.all_sum(torch.tensor([total, count], dtype=torch.float64))
    return (s[0] / s[1].clamp(min=1)).item()


def _global_max(x: float) -> float:
    t = torch.tensor(x, dtype=torch.float64)
    if dist.active():
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return t.item()


def zero_std_groups(advantages: Tensor, group_size: int, tol: float = 1e-6) -> Tensor:
    """Groups whose advantages are all 0, i.e. whose rewards are all equal.   [N] -> bool [N / G]"""
    return (advantages.view(-1, group_size).abs() <= tol).all(-1)


@torch.no_grad()
def rollout_stats(batch: dict[str, Tensor], algo) -> dict[str, float]:
    """Rollout diagnostics of a collected batch (module doc); {} for methods that do not sample."""
    cfg, tok = getattr(algo, "cfg", None), getattr(algo, "tok", None)
    if "mask" not in batch or "input_ids" not in batch or not hasattr(cfg, "max_new_tokens"):
        return {}
    lengths = batch["mask"].sum(-1).float()  # [B]
    out = {"completion_len": _global_mean(lengths.sum().item(), len(lengths)),
           "completion_len_max": _global_max(lengths.max().item() if len(lengths) else 0.0)}
    if tok is not None and tok.eos_token_id is not None:
        cut = truncated(batch, tok.eos_token_id) & (lengths > 0)
        out["truncated_frac"] = _global_mean(cut.float().sum().item(), len(lengths))
    G, adv = getattr(cfg, "group_size", None), batch.get("advantages")
    if G and adv is not None and adv.dim() == 1 and len(adv) % G == 0:
        zero = zero_std_groups(adv.float(), G)
        out["frac_reward_zero_std"] = _global_mean(zero.float().sum().item(), len(zero))
    return out


def clip_stats(ratio: Tensor, advantages: Tensor, mask: Tensor, low: float, high: float,
               total_tokens: float | Tensor | None = None) -> dict[str, float]:
    """Token shares (over the global completion tokens) whose ratio left the trust region on the
    side that clipping stops (TRL's clip_ratio/low_mean, /high_mean; clip_frac = their sum):
        low   ratio < low  and A < 0          high  ratio > high and A > 0
    ratio [B, T] (or [B, 1] / [B] for one ratio per sequence, counted on each of its tokens),
    advantages [B] or [B, T], mask [B, T]."""
    A = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    r = ratio.unsqueeze(-1) if ratio.dim() == 1 else ratio
    m = mask.float()
    n = m.sum() if total_tokens is None else total_tokens
    n = max(float(n), 1.0)  # a batch whose every token is masked (DAPO's overlong filter): 0, not 0/0
    lo = (((r < low) & (A < 0)).float() * m).sum() / n
    hi = (((r > high) & (A > 0)).float() * m).sum() / n
    return {"clip_ratio_low": float(lo), "clip_ratio_high": float(hi), "clip_frac": float(lo + hi)}


@torch.no_grad()
def micro_stats(micro: dict[str, Tensor], totals: dict) -> dict[str, float]:
    """Policy diagnostics a method's loss left in the micro-batch (module doc): additive."""
    if "_entropy" not in micro or "mask" not in micro:
        return {}
    m = micro["mask"].float()
    n = max(float(totals.get("tokens", m.sum())), 1.0)  # every token masked: 0, not 0/0
    return {"entropy": float((micro["_entropy"].float() * m).sum() / n)}
