"""Dr. GRPO, "GRPO done right" (Liu et al., "Understanding R1-Zero-Like Training: A Critical
Perspective", arXiv 2503.20783).

GRPO without its two normalisations that bias optimisation: no 1/|o_i| (which favours long wrong
answers and short right ones) and no division by the group's reward std (which up-weights too easy
or too hard prompts):
    A_i = R(q, o_i) - mean_j R(q, o_j)
    J = E[ 1/G sum_i sum_t min(rho_{i,t} A_i, clip(rho_{i,t}, 1 - eps, 1 + eps) A_i) ]
The paper replaces 1/|o_i| by a constant; as its code (and TRL `loss_type="dr_grpo"`, which we
check against) the constant is the generation budget, L = sum_{i,t} l_{i,t} / (G * max_new_tokens),
which only rescales the step size. Token ratios rho = pi_theta / pi_old as in GRPO.
Defaults: eps = 0.2 (GRPO's); beta = 0 (no KL term: ours, an option adds GRPO's k3 penalty);
G = 8, lr 3e-4, 8 prompts x 8 completions per step, T = 1 are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.losses import AggregationMode, grpo_loss
from reference_impls.core.pg import PGAlgo, SampledConfig, ScaleRewards, rollout, scaled_advantages
from reference_impls.core.train import Batch, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(SampledConfig):  # + steps, batch_size, lr, sampling: core/pg.py
    group_size: int = 8  # G completions per prompt
    eps: float = 0.2  # clip range of the token ratio
    beta: float = 0.0  # k3 KL penalty to the reference in the loss (0: none, ours)
    max_new_tokens: int = 6  # completion budget = the loss's constant normaliser
    aggregation: AggregationMode = "constant"  # Dr. GRPO: sum / (B * max_new_tokens); other modes: core/pg.py
    scale_rewards: ScaleRewards = "none"  # Dr. GRPO: r - mean_g, no std (group | batch: core/pg.py)


def dr_grpo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, max_len: int,
                 eps: float = 0.2, ref_logp: Tensor | None = None, beta: float = 0.0, *,
                 total_seqs: int | None = None, aggregation: AggregationMode = "constant",
                 total_tokens: Tensor | float | None = None) -> tuple[Tensor, dict[str, float]]:
    """sum_{i,t} -min(rho A_i, clip(rho) A_i) [+ beta k3] / (G * max_len).   [G, T], [G] -> scalar"""
    return grpo_loss(logp, old_logp, advantages, mask, ref_logp, eps, eps, beta, aggregation, max_len,
                     total_seqs=total_seqs, total_tokens=total_tokens)


class Algo(PGAlgo):
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        super().__init__(model, tok, task, cfg, seed, ref=cfg.beta > 0)

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        batch, r = rollout(self, [p for p in problems for _ in range(c.group_size)])
        batch["advantages"] = scaled_advantages(r, c.group_size, c.scale_rewards)  # r_i - mean_g r
        return self.finish(batch), {"reward": r.mean().item(),
                                    "completion_len": batch["mask"].sum(-1).mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, old = self.current(micro)
        return dr_grpo_loss(logp, old, micro["advantages"], micro["mask"], c.max_new_tokens, c.eps,
                            micro.get("ref_logp"), c.beta, total_seqs=totals["rows"],
                            aggregation=c.aggregation, total_tokens=totals.get("tokens"))
