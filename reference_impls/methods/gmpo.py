"""GMPO, Geometric-Mean Policy Optimization (Zhao et al., arXiv 2507.20673).

GRPO maximises the arithmetic mean of the token terms rho_t A; GMPO their geometric mean, which
an outlier ratio moves far less. With one advantage per sequence and the clip taken per token
in log space (one-sided by the sign of A, PPO's trust region), before the mean:
    d_{i,t} = log pi_theta(o_{i,t}|q,o_{i,<t}) - log pi_old(o_{i,t}|q,o_{i,<t})
    d^_{i,t} = sgn(A_i) min(sgn(A_i) d_{i,t}, sgn(A_i) clip(d_{i,t}, -eps_low, eps_high))
    w_i = exp( 1/|o_i| sum_t d^_{i,t} )        (= prod_t clip(rho_{i,t})^{1/|o_i|})
    J = E[ 1/G sum_i w_i A_i ]                 L = -J, a mean over the batch's sequences
On-policy (w = 1) the gradient is -1/G sum_i A_i 1/|o_i| sum_t grad log pi, i.e. GRPO's.
Follows the official code (github.com/callsys/GMPO, as merged into verl's `geo_mean` policy
loss) and TRL 1.16's `trl.experimental.gmpo.GMPOTrainer`, which we check against. No KL term
(TRL's default beta = 0). Defaults: eps_low = eps_high = 0.4 (clip range (e^-0.4, e^0.4), the
value TRL's GMPOConfig docs give from the paper's Sec. 4); G = 8, lr 3e-4, 8 prompts x 8
completions per step, T = 1 are ours.
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
    eps_low: float = 0.4  # log-space clip below: rho >= e^-eps_low
    eps_high: float = 0.4  # log-space clip above: rho <= e^eps_high
    aggregation: AggregationMode = "seq-mean-token-mean"  # GMPO: 1/B sum_i l_i; others put l_i on each token
    scale_rewards: ScaleRewards = "group"  # (r - mean_g)/std_g; batch | none: core/pg.py


def gmpo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
              eps_low: float = 0.4, eps_high: float = 0.4,
              aggregation: AggregationMode = "seq-mean-token-mean", max_len: int | None = None, *,
              total_tokens: Tensor | float | None = None, total_seqs: int | None = None,
              ) -> tuple[Tensor, dict[str, float]]:
    """1/B sum_i -A_i exp(mean_t clipped log-ratio).   logp, old, mask [B, T]; A [B] -> (scalar, stats)"""
    m = mask.to(logp.dtype)
    A = advantages.unsqueeze(-1)  # [B, 1]
    d = logp - old_logp  # log rho [B, T]
    sgn = torch.sign(A)
    d_hat = sgn * torch.minimum(sgn * d, sgn * torch.clamp(d, -eps_low, eps_high))  # one-sided clip
    w = torch.exp((d_hat * m).sum(-1) / m.sum(-1).clamp(min=1))  # geometric mean of clipped rho [B]
    per_seq = -w * advantages  # l_i
    if aggregation == "seq-mean-token-mean":
        n = len(per_seq) if total_seqs is None else total_seqs
        loss = per_seq.sum() / n
    else:  # l_i on every token of o_i, then the chosen reduction (core/pg.py)
        loss = aggregate(per_seq.unsqueeze(-1).expand_as(m), m, aggregation, max_len,
                         total_tokens=total_tokens, total_seqs=total_seqs)
    rho = torch.exp(d.detach())
    return loss, clip_stats(rho, advantages, mask, float(torch.exp(torch.tensor(-eps_low))),
                            float(torch.exp(torch.tensor(eps_high))), total_tokens)


class Algo(PGAlgo):
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        return group_collect(self, step)

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, old = self.current(micro)
        return gmpo_loss(logp, old, micro["advantages"], micro["mask"], c.eps_low, c.eps_high,
                         c.aggregation, c.max_new_tokens, total_tokens=totals.get("tokens"),
                         total_seqs=totals["rows"])
