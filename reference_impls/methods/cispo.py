"""CISPO, Clipped IS-weight Policy Optimization (MiniMax-M1, arXiv 2506.13585).

GRPO's group advantages, but the clip acts on the importance-sampling *weight*, which is then
held constant (stop-gradient), instead of on the token update: no token's gradient is dropped,
however far its ratio moved.
    r_{i,t} = pi_theta(o_{i,t} | q, o_{i,<t}) / pi_old(o_{i,t} | q, o_{i,<t})
    r^_{i,t} = clip(r_{i,t}, 1 - eps_low, 1 + eps_high)
    J = E[ 1/sum_i |o_i| sum_i sum_t sg(r^_{i,t}) A_i log pi_theta(o_{i,t} | q, o_{i,<t}) ]
    L = -J: token-mean over the global batch (`aggregation`, core/pg.py)
On-policy (r = 1, one update per batch) the gradient is DAPO's; the two differ once pi_old !=
pi_theta (`updates_per_batch` > 1), where clipped tokens keep a gradient of weight r^.
Checked against TRL 1.16 `GRPOConfig(loss_type="cispo")`, which clamps the ratio above only,
at `epsilon_high` (a ratio, not 1 + eps): ours with eps_low = None and 1 + eps_high = TRL's
epsilon_high. Default eps_high = 4 (ratio cap 5.0, the value TRL's docs recommend after ScaleRL,
arXiv 2510.13786) and no lower bound follow TRL; the paper's own eps values were not seen here.
G = 8, no KL, lr 3e-4, 8 prompts x 8 completions per step, T = 1 are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.diagnostics import clip_stats
from reference_impls.core.losses import AggregationMode, aggregate
from reference_impls.core.pg import PGAlgo, SampledConfig, ScaleRewards, group_collect
from reference_impls.core.train import Batch

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(SampledConfig):  # + steps, batch_size, lr, sampling: core/pg.py
    group_size: int = 8  # G completions per prompt
    eps_low: float | None = None  # IS-weight clip below 1 (None: no lower bound, as TRL)
    eps_high: float = 4.0  # IS-weight clip above 1: r^ <= 1 + eps_high (TRL epsilon_high = 5.0)
    aggregation: AggregationMode = "token-mean"  # 1 / sum_i |o_i| (paper); other modes: core/pg.py
    scale_rewards: ScaleRewards = "group"  # (r - mean_g)/std_g; batch | none: core/pg.py


def cispo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
               eps_low: float | None = None, eps_high: float = 4.0,
               aggregation: AggregationMode = "token-mean", max_len: int | None = None, *,
               total_tokens: Tensor | float | None = None, total_seqs: int | None = None,
               ) -> tuple[Tensor, dict[str, float]]:
    """agg( -sg(clip(r, 1 - eps_low, 1 + eps_high)) A_i log pi ).   logp, old, mask [B, T]; A [B]"""
    ratio = torch.exp(logp - old_logp)  # r [B, T]
    low = -float("inf") if eps_low is None else 1 - eps_low
    w = torch.clamp(ratio, min=low, max=1 + eps_high).detach()  # sg(r^)
    loss_tok = -w * advantages.unsqueeze(-1) * logp  # -sg(r^) A log pi   [B, T]
    loss = aggregate(loss_tok, mask, aggregation, max_len, total_tokens=total_tokens, total_seqs=total_seqs)
    return loss, clip_stats(ratio.detach(), advantages, mask, low, 1 + eps_high, total_tokens)


class Algo(PGAlgo):
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        return group_collect(self, step)

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, old = self.current(micro)
        return cispo_loss(logp, old, micro["advantages"], micro["mask"], c.eps_low, c.eps_high,
                          c.aggregation, c.max_new_tokens, total_tokens=totals.get("tokens"),
                          total_seqs=totals["rows"])
