"""Clip-Cov (Cui et al., The Entropy Mechanism of Reinforcement Learning for Reasoning Language
Models, arXiv 2505.22617; official code github.com/PRIME-RL/Entropy-Mechanism-of-RL,
verl/trainer/ppo/core_algos.py::compute_policy_loss_clip_cov).

Entropy collapses because the entropy change is driven by the covariance between a token's
log-probability and its advantage. Clip-Cov removes the gradient of a few high-covariance tokens:
    Cov_{i,t} = (log pi_theta(y_{i,t}) - mean_{valid} log pi_theta) * (A_{i,t} - mean_{valid} A)
    I_clip   = r * N tokens drawn uniformly at random (at least one) among
               { valid tokens with omega_low < Cov < omega_high }
    l_{i,t}  = max(-rho A, -clip(rho, 1 - eps_low, 1 + eps_high) A) * (0 if (i,t) in I_clip else 1)
    L        = aggregate(l, mask)
The means run over all completion tokens of the batch (A_{i,t} = A_i, so longer completions
weigh more, as in the code). Detached tokens count in the normaliser but add neither value nor
gradient (the code multiplies their loss by 0).
Defaults from the official code and its DAPO recipes (recipe/dapo/7b_clip_cov.sh): r = 2e-4,
(omega_low, omega_high) = (1, 5), token-mean aggregation, eps_low = eps_high = 1 (the recipe
disables ordinary PPO clipping in practice: Clip-Cov replaces it), no KL.
Where we differ from the code: it draws I_clip inside every loss call (each micro-batch, each PPO
epoch) from the current policy's log-probs and also excludes tokens the PPO clip already clipped;
we draw once per collected batch from pi_old's log-probs (the same at the first update, where
no token is clipped yet), so the selection is independent of the micro-batch split and costs one
no-grad forward pass. Tiny-preset lr, steps and batch sizes are ours (rl_data.GroupConfig).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.diagnostics import clip_stats
from reference_impls.core.losses import AggregationMode, aggregate
from reference_impls.core.rl_data import (
    GroupAlgo,
    GroupConfig,
    add_ref_kl,
    masked_mean,
    token_pg_loss,
)
from reference_impls.core.train import Batch

NEEDS = {"verifiable_reward"}
STARTS_FROM_BASE = True


@dataclass
class Config(GroupConfig):
    aggregation: AggregationMode = "token-mean"  # official recipes: loss_agg_mode token-mean
    eps_low: float = 1.0  # PPO clip, lower (official clip-cov recipe: 1, i.e. off in practice)
    eps_high: float = 1.0  # PPO clip, upper (official clip-cov recipe: 1)
    clip_ratio: float = 2e-4  # r: fraction of the batch's completion tokens detached (at least 1)
    cov_lb: float = 1.0  # omega_low: covariance band, lower bound (exclusive)
    cov_ub: float = 5.0  # omega_high: covariance band, upper bound (exclusive)


def token_covariance(logp: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
    """Cov_{i,t} = (logp - mean logp)(A - mean A), means over mask.   [B, T] (adv [B] or [B, T]) -> [B, T]"""
    A = (adv.unsqueeze(-1) if adv.dim() == 1 else adv).expand_as(logp)
    return (A - masked_mean(A, mask)) * (logp - masked_mean(logp, mask))


def clip_cov_select(logp: Tensor, adv: Tensor, mask: Tensor, clip_ratio: float, lb: float, ub: float,
                    generator: torch.Generator | None = None) -> Tensor:
    """Boolean [B, T]: the tokens whose gradient is detached (random subset of the covariance band)."""
    cov = token_covariance(logp.detach(), adv, mask)
    band = (cov > lb) & (cov < ub) & (mask > 0)  # candidate tokens
    n_clip = max(int(clip_ratio * mask.sum().item()), 1)  # r * N, at least one
    cand = torch.nonzero(band)  # [K, 2]
    pick = cand[torch.randperm(len(cand), generator=generator)[: min(n_clip, len(cand))]]
    sel = torch.zeros_like(band)
    sel[pick[:, 0], pick[:, 1]] = True
    return sel


def clip_cov_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, detach: Tensor,
                  eps_low: float = 1.0, eps_high: float = 1.0,
                  aggregation: AggregationMode = "token-mean", max_len: int | None = None,
                  ref_logp: Tensor | None = None, beta: float = 0.0, *,
                  total_tokens: float | Tensor | None = None, total_seqs: int | None = None,
                  ) -> tuple[Tensor, dict[str, float]]:
    """logp, old_logp, mask, detach [B, T]; advantages [B] -> (scalar loss, stats)."""
    loss_tok, clipped = token_pg_loss(logp, old_logp, advantages, eps_low, eps_high)  # PPO-clip [B, T]
    loss_tok = loss_tok * (~detach).to(loss_tok.dtype)  # corr = 0 on I_clip
    loss_tok = add_ref_kl(loss_tok, logp, ref_logp, beta)  # + beta k3 if a reference is kept
    loss = aggregate(loss_tok, mask, aggregation, max_len, total_tokens=total_tokens,
                     total_seqs=total_seqs)
    tm = dict(total_tokens=total_tokens)
    return loss, {"cov_detached_frac": aggregate(detach.float(), mask, "token-mean", **tm).item(),
                  "clip_frac": aggregate(clipped.float(), mask, "token-mean", **tm).item(),
                  **clip_stats(torch.exp(logp - old_logp).detach(), advantages, mask, 1 - eps_low, 1 + eps_high,
                               total_tokens)}


class Algo(GroupAlgo):
    needs_old_logp = True  # pi_old log-probs rank the tokens

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        batch, log = super().collect(step)
        c = self.cfg
        batch["detach"] = clip_cov_select(batch["old_logp"], batch["advantages"], batch["mask"],
                                          c.clip_ratio, c.cov_lb, c.cov_ub)  # global torch RNG
        return batch, log

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp = self._logp(self.module, micro)  # [n, T-1]
        old = micro["old_logp"] if c.updates_per_batch > 1 else logp.detach()
        return clip_cov_loss(logp, old, micro["advantages"], micro["mask"], micro["detach"],
                             c.eps_low, c.eps_high, c.aggregation, c.max_new_tokens,
                             micro.get("ref_logp"), c.beta, total_tokens=totals["tokens"], total_seqs=totals["rows"])
