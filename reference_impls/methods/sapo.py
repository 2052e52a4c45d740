"""SAPO, Soft Adaptive Policy Optimization (Gao et al., Qwen team, arXiv 2511.20347).

GRPO with its hard clip replaced by a smooth, temperature-controlled gate on the token ratio:
    r_{i,t} = pi_theta(o_{i,t} | q, o_{i,<t}) / pi_old(o_{i,t} | q, o_{i,<t})
    f_{i,t} = sigmoid(tau_i (r_{i,t} - 1)) * 4 / tau_i,   tau_i = tau_pos if A_i > 0 else tau_neg
    J = E[ 1/G sum_i 1/|o_i| sum_t f_{i,t} A_i ]          L = -J (seq-mean-token-mean)
f(1) = 2 / tau and f'(1) = 1: on-policy the gradient is GRPO's; as r leaves 1 the gate's
slope sigma'(.) * 4 decays smoothly instead of dropping to 0 at a clip edge, and a larger
tau_neg shuts tokens with negative advantage faster.
Checked against TRL 1.16 `GRPOConfig(loss_type="sapo")` (its gate and its seq-mean-token-mean
normaliser). Defaults tau_pos = 1.0, tau_neg = 1.05 are TRL's (its docs cite the paper for both);
G = 8, no KL, lr 3e-4, 8 prompts x 8 completions per step, T = 1 are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.losses import AggregationMode, aggregate
from reference_impls.core.pg import PGAlgo, SampledConfig, ScaleRewards, group_collect
from reference_impls.core.train import Batch

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(SampledConfig):  # + steps, batch_size, lr, sampling: core/pg.py
    group_size: int = 8  # G completions per prompt
    tau_pos: float = 1.0  # gate temperature for A > 0 (TRL sapo_temperature_pos)
    tau_neg: float = 1.05  # gate temperature for A <= 0 (TRL sapo_temperature_neg)
    aggregation: AggregationMode = "seq-mean-token-mean"  # paper / TRL; other modes: core/pg.py
    scale_rewards: ScaleRewards = "group"  # (r - mean_g)/std_g; batch | none: core/pg.py


def sapo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
              tau_pos: float = 1.0, tau_neg: float = 1.05,
              aggregation: AggregationMode = "seq-mean-token-mean", max_len: int | None = None, *,
              total_tokens: Tensor | float | None = None, total_seqs: int | None = None,
              ) -> tuple[Tensor, dict[str, float]]:
    """agg( -sigmoid(tau (r - 1)) 4/tau A_i ).   logp, old, mask [B, T]; A [B] -> (scalar, stats)"""
    A = advantages.unsqueeze(-1)  # [B, 1]
    ratio = torch.exp(logp - old_logp)  # r [B, T]
    tau = torch.where(A > 0, tau_pos, tau_neg)  # [B, 1]
    gate = torch.sigmoid(tau * (ratio - 1)) * 4 / tau  # f(r) [B, T]
    loss = aggregate(-gate * A, mask, aggregation, max_len, total_tokens=total_tokens, total_seqs=total_seqs)
    slope = 4 * torch.sigmoid(tau * (ratio - 1)) * (1 - torch.sigmoid(tau * (ratio - 1)))  # df/dr
    return loss, {"gate_slope": aggregate(slope.detach(), mask, "token-mean", total_tokens=total_tokens).item()}


class Algo(PGAlgo):
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        return group_collect(self, step)

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, old = self.current(micro)
        return sapo_loss(logp, old, micro["advantages"], micro["mask"], c.tau_pos, c.tau_neg,
                         c.aggregation, c.max_new_tokens, total_tokens=totals.get("tokens"),
                         total_seqs=totals["rows"])
