"""Loss aggregation, KL estimators and group advantages shared by the methods.

Every reducer takes optional *global* normalisers (`total_tokens`, `total_seqs`): pass the counts
of the whole batch when a batch is split into micro-batches, and the sum of the micro-batch losses
equals the full-batch loss exactly, whatever the split (gradient-accumulation invariance).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from reference_impls.core.diagnostics import clip_stats

AggregationMode = Literal["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "constant"]
KLKind = Literal["k1", "k2", "k3"]


def aggregate(loss_tok: Tensor, mask: Tensor, mode: AggregationMode, constant: float | None = None,
              *, total_tokens: float | Tensor | None = None,
              total_seqs: int | None = None) -> Tensor:
    """Reduce a per-token loss [B, T] under `mask` [B, T] to a scalar.

    token-mean           sum_it l m / sum_it m                     (DAPO, arXiv 2503.14476)
    token-sum            sum_it l m                                (no normaliser)
    seq-mean-token-mean  1/B sum_i (sum_t l m / sum_t m)           (GRPO paper, arXiv 2402.03300)
    seq-mean-token-sum   1/B sum_i sum_t l m
    constant             sum_it l m / (B * constant)               (Dr. GRPO, arXiv 2503.20783;
                                                                     constant = max completion len)
    `total_tokens` / `total_seqs` replace sum(m) / B by the counts of the full batch.
    """
    mask = mask.to(loss_tok.dtype)
    lm = loss_tok * mask  # [B, T]
    n_seqs = loss_tok.shape[0] if total_seqs is None else total_seqs
    if mode == "token-mean":
        n_tok = mask.sum() if total_tokens is None else total_tokens
        return lm.sum() / n_tok
    if mode == "token-sum":
        return lm.sum()
    if mode == "seq-mean-token-mean":
        return (lm.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / n_seqs
    if mode == "seq-mean-token-sum":
        return lm.sum() / n_seqs
    if mode == "constant":
        if constant is None:
            raise ValueError("aggregation 'constant' needs `constant` (e.g. the max completion length)")
        return lm.sum() / (n_seqs * constant)
    raise ValueError(f"unknown aggregation mode {mode!r}")


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: KLKind) -> Tensor:
    """Per-token estimators of KL(pi || ref) from samples of pi (Schulman, 'Approximating KL
    divergence', 2020). With log r = ref_logp - logp:
    k1 = -log r (unbiased, high variance, can be < 0);  k2 = (log r)^2 / 2 (biased, low variance);
    k3 = (r - 1) - log r (unbiased, >= 0; GRPO's estimator).   [B, T] -> [B, T]"""
    log_r = ref_logp - logp
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.exp(log_r) - log_r - 1
    raise ValueError(f"unknown KL estimator {kind!r}")


def group_advantages(rewards: Tensor, group_size: int, scale: Literal["std", "none", "loo"] = "std",
                     eps: float = 1e-4) -> Tensor:
    """Advantages of N = n_groups * G rewards laid out group by group (consecutive G share a prompt).

    std:  A_i = (r_i - mean_g r) / (std_g r + eps), std with the *unbiased* (N-1) estimator, as
          torch.std's default and TRL's GRPOTrainer (GRPO, arXiv 2402.03300)
    none: A_i = r_i - mean_g r                                  (Dr. GRPO, arXiv 2503.20783)
    loo:  A_i = r_i - 1/(G-1) sum_{j != i} r_j                  (RLOO, arXiv 2402.14740)
    [N] -> [N]"""
    r = rewards.float().view(-1, group_size)  # [n_groups, G]
    mean = r.mean(-1, keepdim=True)  # [n_groups, 1]
    if scale == "std":
        std = r.std(-1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)  # one sample: 0
        adv = (r - mean) / (std + eps)
    elif scale == "none":
        adv = r - mean
    elif scale == "loo":
        if group_size < 2:
            raise ValueError("leave-one-out needs group_size >= 2")
        adv = r - (r.sum(-1, keepdim=True) - r) / (group_size - 1)  # r_i - mean_{j!=i} r_j
    else:
        raise ValueError(f"unknown advantage scale {scale!r}")
    return adv.view(-1)


# ------------------------------------------------------------------------------ shared method losses
# Losses several methods (and core/selection, selftrain, rl_data) build on; the equations are in
# their methods' docstrings (methods/sft.py, methods/grpo.py).
def sft_loss(logp: Tensor, mask: Tensor, *, total_tokens: float | Tensor | None = None) -> Tensor:
    """- sum(m log p) / sum(m): logp [B, T], mask [B, T] (completion tokens) -> scalar."""
    return -aggregate(logp, mask, "token-mean", total_tokens=total_tokens)


def grpo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
              ref_logp: Tensor | None = None, eps_low: float = 0.2, eps_high: float = 0.2,
              beta: float = 0.0, aggregation: AggregationMode = "seq-mean-token-mean",
              max_len: int | None = None, *, total_tokens: float | Tensor | None = None,
              total_seqs: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """logp, old_logp, mask, ref_logp [G, T]; advantages [G] -> (scalar loss, stats)."""
    A = advantages.unsqueeze(-1)  # [G, 1]
    ratio = torch.exp(logp - old_logp)  # rho [G, T]
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)  # clip(rho, 1-eps_low, 1+eps_high)
    loss_tok = -torch.minimum(ratio * A, clipped * A)  # -min(rho A, clip(rho) A)   [G, T]
    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp, "k3")  # [G, T]
        loss_tok = loss_tok + beta * kl
    loss = aggregate(loss_tok, mask, aggregation, max_len, total_tokens=total_tokens,
                     total_seqs=total_seqs)
    stats = clip_stats(ratio.detach(), advantages, mask, 1 - eps_low, 1 + eps_high, total_tokens)  # token means
    if ref_logp is not None:  # additive over micro-batches
        stats["kl"] = aggregate(kl.detach(), mask, "token-mean", total_tokens=total_tokens).item()
    return loss, stats
