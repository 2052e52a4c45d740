"""ReMax (Li et al., arXiv 2310.10505): REINFORCE whose per-prompt baseline is the reward of the
policy's own greedy completion.

For each prompt x_i: sample a^i ~ pi_theta(.|x_i), decode abar^i greedily (abar_t = argmax pi_theta),
    g = 1/N sum_i sum_t grad log pi_theta(a_t^i | x_i, a_<t^i) [r(x_i, a^i) - r(x_i, abar^i)]   (ReMax, Alg. 1)
As a loss:  L = -1/N sum_i s_i A_i,  A_i = r(x_i, a^i) - r(x_i, abar^i),  s_i = pi_theta/pi_old(a^i|x_i)
(s = 1 in value with one update per batch; the gradient is the estimator above).
Conventions: summed (sequence) log-probs, mean over prompts. The greedy completion is decoded once
per step with the same policy, under no_grad, and is never trained on. No KL term (the paper's
reward-model setting may fold one into r; not here). lr 3e-4, 64 prompts per step, T = 1 are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.pg import PGAlgo, rollout, sequence_pg_loss
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps (sampled batches)
    batch_size: int = 64  # prompts per step: one sampled + one greedy completion each
    lr: float = 3e-4  # peak learning rate (AdamW; ours)
    temperature: float = 1.0  # sampling (and scoring) temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def remax_advantages(rewards: Tensor, greedy_rewards: Tensor) -> Tensor:
    """A_i = r(x_i, a^i) - r(x_i, abar^i).   [N], [N] -> [N]"""
    return rewards.float() - greedy_rewards.float()


def remax_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
               total_seqs: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """L = -1/N sum_i s_i A_i over summed log-probs.   [N, T], [N] -> scalar"""
    return sequence_pg_loss(logp, old_logp, advantages, mask, total_seqs=total_seqs)


class Algo(PGAlgo):
    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        problems = self.task.prompts(self.cfg.batch_size, step_rng(self.seed, step))
        batch, r = rollout(self, problems)
        _, r_greedy = rollout(self, problems, greedy=True)  # the baseline: reward of argmax decoding
        batch["advantages"] = remax_advantages(r, r_greedy)
        return self.finish(batch), {"reward": r.mean().item(), "greedy_reward": r_greedy.mean().item(),
                                    "completion_len": batch["mask"].sum(-1).mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        logp, old = self.current(micro)
        return remax_loss(logp, old, micro["advantages"], micro["mask"], total_seqs=totals["rows"])
