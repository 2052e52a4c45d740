"""PODS: Policy Optimization with Down-Sampling (Xu et al., Not All Rollouts are Useful:
Down-Sampling Rollouts in LLM Reinforcement Learning, arXiv 2504.13818), with max-variance
down-sampling, on GRPO.

Rollouts are cheap and parallel, updates are not: sample n completions per prompt, keep the m
whose rewards vary most, and run the GRPO update on those m only:
    S* = argmax_{S subset of {1..n}, |S| = m}  Var({r_i : i in S})
    A_i = (r_i - mean_{S*} r) / (std_{S*} r + eps)  for i in S*       (GRPO advantages within S*)
Max-variance has an O(n log n) solution (the paper's theorem): with the rewards sorted, an
optimal S* is the k largest plus the m - k smallest for some k in 0..m, so we try the m + 1
candidates and keep the first of maximal (population) variance. On 0/1 rewards this keeps as
even a mix of right and wrong answers as the sample allows.
Defaults: n = 16 rollouts, m = 4 kept per prompt follow the paper's main GRPO-PODS setting as we
read it (not re-checked against the text here); 16 prompts x 4 kept = 64 trained rows per step,
lr 3e-4 and 100 steps are ours for the tiny preset (the GRPO part as rl_data.GroupConfig).
`reward` logs the mean over all n samples (the policy's reward), `reward_kept` over the m kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reference_impls.core.rl_data import GroupAlgo, GroupConfig, take_rows
from reference_impls.core.train import Batch, step_rng

NEEDS = {"verifiable_reward"}
STARTS_FROM_BASE = True


@dataclass
class Config(GroupConfig):
    batch_size: int = 64  # completions trained on per step = prompts x keep
    group_size: int = 16  # n: completions sampled per prompt
    keep: int = 4  # m: completions kept per prompt for the update (max-variance subset)


def max_variance_subset(rewards: list[float], m: int) -> list[int]:
    """Indices (ascending) of m of the rewards with maximal variance: the best of the m + 1 sets
    {k largest} + {m - k smallest}.   O(n log n)."""
    n = len(rewards)
    if m >= n:
        return list(range(n))
    order = sorted(range(n), key=lambda i: rewards[i])  # ascending, stable
    best, best_var = None, -1.0
    for k in range(m + 1):  # k from the top, m - k from the bottom
        idx = order[: m - k] + order[n - k:]  # (order[n:] is empty at k = 0)
        vals = torch.tensor([rewards[i] for i in idx], dtype=torch.float64)
        var = vals.var(unbiased=False).item()
        if var > best_var + 1e-12:
            best, best_var = idx, var
    return sorted(best)


class Algo(GroupAlgo):
    def prompts(self, step: int) -> list:
        c = self.cfg
        return self.task.prompts(max(1, c.batch_size // c.keep), step_rng(self.seed, step))

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        n, m = c.group_size, min(c.keep, c.group_size)
        batch, rewards, _ = self.sample_groups(self.prompts(step), n)  # [P * n] rollouts
        rows = [g * n + i for g in range(len(rewards) // n)
                for i in max_variance_subset(rewards[g * n:(g + 1) * n].tolist(), m)]
        kept = rewards[rows]  # [P * m]
        batch = self.finish(take_rows(batch, rows), kept, m)  # GRPO advantages within each kept set
        return batch, {"reward": rewards.mean().item(), "reward_kept": kept.mean().item(),
                       "reward_std_kept": kept.view(-1, m).std(-1, unbiased=False).mean().item(),
                       "completion_len": batch["mask"].sum(-1).mean().item()}
