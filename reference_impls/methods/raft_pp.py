"""RAFT++ and Reinforce-Rej (Xiong et al., "A Minimalist Approach to LLM Reasoning: from Rejection
Sampling to Reinforce", arXiv 2504.11343).

Sample n completions per prompt, score them with a verifier.
RAFT++ (variant="raft++"): rejection sampling -- keep only the correct samples D+ -- and fit them
with PPO's importance-weighted, clipped token ratio (the "++" over RAFT's plain SFT on D+):
    s_t = pi_theta(a_t | x, a_<t) / pi_old(a_t | x, a_<t)
    L = -1/|D+| sum_{(x,a) in D+} 1/|a| sum_t min(s_t, clip(s_t, 1 - eps, 1 + eps))
Reinforce-Rej (variant="reinforce-rej"): drop every prompt whose n samples are all correct or
all wrong, and train the same clipped Reinforce loss on the rest with the binary reward in
{-1, +1} as the (unbaselined) advantage:
    L = -1/|D| sum_{(x,a) in D} 1/|a| sum_t min(s_t r(x,a), clip(s_t, 1 - eps, 1 + eps) r(x,a))
"Correct" means reward >= `threshold` (1.0: exact match on 0/1 rewards). When a batch keeps
nothing, all its rows are kept with advantage 0 (no gradient this step). Convention: token ratios,
1/|a| per sequence, mean over the kept sequences (seq-mean-token-mean). No KL term.
Defaults: eps = 0.2 (PPO's); n = 4 samples per prompt, lr 3e-4, 16 prompts per step, T = 1 are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core.losses import grpo_loss
from reference_impls.core.pg import PGAlgo, group_rows, mixed_groups, rollout
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps (sampled batches)
    batch_size: int = 64  # completions sampled per step = prompts x group_size (fewer are kept)
    lr: float = 3e-4  # peak learning rate (AdamW; ours)
    variant: Literal["raft++", "reinforce-rej"] = "raft++"  # positives only | drop all-right/all-wrong groups
    group_size: int = 4  # samples per prompt (ours)
    eps: float = 0.2  # clip range of the token importance ratio
    threshold: float = 1.0  # a sample is correct if its reward >= threshold
    temperature: float = 1.0  # sampling (and scoring) temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def raft_select(rewards: Tensor, group_size: int, variant: str = "raft++",
                threshold: float = 1.0) -> tuple[list[int], Tensor]:
    """Rows kept and their advantages.  raft++: correct rows, A = 1; reinforce-rej: rows of groups
    with both correct and wrong samples, A = +1 / -1.   [N] -> (list of kept rows, A [N'])"""
    correct = (rewards >= threshold).float()  # [N]
    if variant == "raft++":
        rows = correct.nonzero().flatten().tolist()
        return rows, torch.ones(len(rows))
    rows = group_rows(mixed_groups(correct, group_size), group_size)
    return rows, 2 * correct[rows] - 1  # r in {-1, +1}


def raft_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, eps: float = 0.2, *,
              total_seqs: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """-1/|D| sum_i 1/|a_i| sum_t min(s_t A_i, clip(s_t) A_i): GRPO's clipped token loss with the
    kept rows' advantages, seq-mean-token-mean.   [B, T], [B] -> scalar"""
    return grpo_loss(logp, old_logp, advantages, mask, eps_low=eps, eps_high=eps,
                     aggregation="seq-mean-token-mean", total_seqs=total_seqs)


class Algo(PGAlgo):
    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        batch, r = rollout(self, [p for p in problems for _ in range(c.group_size)])
        rows, adv = raft_select(r, c.group_size, c.variant, c.threshold)
        if rows:
            batch = {k: v[rows] for k, v in batch.items()}
        else:  # nothing kept: a zero-advantage batch (zero gradient), so the step still runs
            adv = torch.zeros(len(r))
        batch["advantages"] = adv.to(batch["mask"].device)
        return self.finish(batch), {"reward": r.mean().item(), "kept_frac": len(rows) / len(r),
                                    "completion_len": batch["mask"].sum(-1).mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        logp, old = self.current(micro)
        return raft_loss(logp, old, micro["advantages"], micro["mask"], self.cfg.eps,
                         total_seqs=totals["rows"])
