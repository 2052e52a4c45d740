"""Group Sequence Policy Optimization, GSPO (Zheng et al., Qwen team, arXiv 2507.18071).

GRPO's group advantages with the importance ratio, clipping and optimisation moved to the
sequence level. For G completions y_i of prompt x:
    A_i = (r_i - mean(r)) / std(r)
    s_i = (pi_theta(y_i|x) / pi_old(y_i|x))^{1/|y_i|}
        = exp( 1/|y_i| sum_t log pi_theta(y_{i,t}|x, y_{i,<t}) / pi_old(y_{i,t}|x, y_{i,<t}) )
    J = E[ 1/G sum_i min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i) ]      (GSPO, eq. 5-7)
    L = -J, a mean over the batch's sequences.
On-policy (s = 1) the gradient is -1/G sum_i A_i 1/|y_i| sum_t grad log pi(y_{i,t}), i.e. GRPO's;
they differ once pi_old != pi_theta (`updates_per_batch` > 1), where one clip decision is taken
per sequence. The paper's GSPO-token variant (per-token advantages) is not implemented; with
sequence-level advantages it has the same value and gradient. No KL term (the paper has none).
Checked against TRL 1.16 `GRPOConfig(importance_sampling_level="sequence", loss_type="grpo")`.
Defaults: clip ranges 3e-4 / 4e-4 (the paper's left / right), unbiased std + 1e-4 (as GRPO here
and TRL); G = 8, lr 3e-4, 8 prompts x 8 completions per step, T = 1 are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.losses import AggregationMode, aggregate
from reference_impls.core.pg import (
    PGAlgo,
    SampledConfig,
    ScaleRewards,
    rollout,
    scaled_advantages,
    sequence_log_ratio,
    sequence_pg_loss,
)
from reference_impls.core.train import Batch, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(SampledConfig):  # + steps, batch_size, lr, sampling: core/pg.py
    group_size: int = 8  # G completions per prompt
    eps_low: float = 3e-4  # clip of the sequence ratio below 1 (paper: 3e-4)
    eps_high: float = 4e-4  # clip of the sequence ratio above 1 (paper: 4e-4)
    aggregation: AggregationMode = "seq-mean-token-mean"  # GSPO: 1/B sum_i l_i; others put l_i on each token of o_i (core/pg.py)
    scale_rewards: ScaleRewards = "group"  # (r - mean_g)/std_g; batch | none: core/pg.py


def gspo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
              eps_low: float = 3e-4, eps_high: float = 4e-4, *, total_seqs: int | None = None,
              aggregation: AggregationMode = "seq-mean-token-mean", max_len: int | None = None,
              total_tokens: Tensor | float | None = None) -> tuple[Tensor, dict[str, float]]:
    """1/B sum_i -min(s_i A_i, clip(s_i) A_i) with the length-normalised ratio s_i.
    Another `aggregation` reduces l_i placed on every token of o_i, as TRL's
    importance_sampling_level="sequence" with that loss_type.
    logp, old_logp, mask [B, T]; advantages [B] -> (scalar, stats)"""
    loss, stats = sequence_pg_loss(logp, old_logp, advantages, mask, eps_low, eps_high, length_norm=True,
                                   total_seqs=total_seqs)
    if aggregation == "seq-mean-token-mean":
        return loss, stats
    s = torch.exp(sequence_log_ratio(logp, old_logp, mask, length_norm=True)).unsqueeze(-1)  # [B, 1]
    A = advantages.unsqueeze(-1)
    l_tok = -torch.minimum(s * A, torch.clamp(s, 1 - eps_low, 1 + eps_high) * A).expand_as(mask)  # l_i on each token
    return aggregate(l_tok, mask, aggregation, max_len, total_tokens=total_tokens, total_seqs=total_seqs), stats


class Algo(PGAlgo):
    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        batch, r = rollout(self, [p for p in problems for _ in range(c.group_size)])
        batch["advantages"] = scaled_advantages(r, c.group_size, c.scale_rewards)  # (r - mean) / (std + 1e-4)
        return self.finish(batch), {"reward": r.mean().item(),
                                    "completion_len": batch["mask"].sum(-1).mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, old = self.current(micro)
        return gspo_loss(logp, old, micro["advantages"], micro["mask"], c.eps_low, c.eps_high,
                         total_seqs=totals["rows"], aggregation=c.aggregation, max_len=c.max_new_tokens,
                         total_tokens=totals.get("tokens"))
