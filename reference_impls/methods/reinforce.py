"""REINFORCE with a baseline (Williams 1992, "Simple statistical gradient-following algorithms for
connectionist reinforcement learning", Machine Learning 8, DOI 10.1007/BF00992696), sequence-level.

One completion y per prompt x, one scalar reward r(x, y); Williams' update
    Delta theta = alpha (r - b) grad log pi_theta(y | x),   log pi(y|x) = sum_t log pi(y_t | x, y_<t)
with a baseline b that does not depend on y (reinforcement comparison): either a moving average of
past rewards, b_k = decay * b_{k-1} + (1 - decay) * mean(r of batch k-1) (the running average
Williams discusses), or the current batch's mean (ours, an option). As a loss over a batch of B:
    L = -1/B sum_i s_i A_i,  A_i = r_i - b,  s_i = pi_theta(y_i|x_i) / pi_old(y_i|x_i)
s = 1 in value with one update per batch, so grad L = -1/B sum_i A_i grad log pi(y_i|x_i) (the
estimator above); with `updates_per_batch` > 1, s is the (unclipped) sequence importance weight.
Conventions: summed (sequence) log-probs, mean over sequences. No KL, no clipping.
Defaults (all ours for the tiny preset; the paper has no LLM setting): moving baseline with decay
0.9, initialised to the first batch's mean reward; lr 3e-4, 64 prompts per step, T = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core.pg import PGAlgo, rollout, sequence_pg_loss
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps (sampled batches)
    batch_size: int = 64  # prompts per step, one completion each
    lr: float = 3e-4  # peak learning rate (AdamW; ours)
    baseline: Literal["moving", "batch", "none"] = "moving"  # b: moving average of past rewards | batch mean | 0
    baseline_decay: float = 0.9  # moving average: b <- decay * b + (1 - decay) * mean(r) (ours)
    temperature: float = 1.0  # sampling (and scoring) temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def reinforce_advantages(rewards: Tensor, baseline: float | Tensor) -> Tensor:
    """A_i = r_i - b.   [B] -> [B]"""
    return rewards.float() - baseline


def reinforce_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
                   total_seqs: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """L = -1/B sum_i s_i A_i (grad: -1/B sum_i A_i grad sum_t log pi at s = 1).   [B, T], [B] -> scalar"""
    return sequence_pg_loss(logp, old_logp, advantages, mask, total_seqs=total_seqs)


class Algo(PGAlgo):
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        super().__init__(model, tok, task, cfg, seed)
        self.b: float | None = None  # moving-average baseline (None until the first batch)

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size, step_rng(self.seed, step))
        batch, r = rollout(self, problems)
        mean = r.mean().item()
        if c.baseline == "moving":
            b = mean if self.b is None else self.b  # b uses past batches only (first: its own mean)
            self.b = c.baseline_decay * b + (1 - c.baseline_decay) * mean
        else:
            b = mean if c.baseline == "batch" else 0.0
        batch["advantages"] = reinforce_advantages(r, b)
        return self.finish(batch), {"reward": mean, "baseline": b,
                                    "completion_len": batch["mask"].sum(-1).mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        logp, old = self.current(micro)
        return reinforce_loss(logp, old, micro["advantages"], micro["mask"], total_seqs=totals["rows"])

    def extra_state(self) -> dict:
        return {"baseline": self.b}

    def load_extra_state(self, state: dict) -> None:
        self.b = state.get("baseline")
