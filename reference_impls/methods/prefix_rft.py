"""Prefix-RFT: Blending Supervised and Reinforcement Fine-Tuning with Prefix Sampling
(Huang et al., arXiv 2507.01679).

Each prompt's group of G rows holds G - n_prefix on-policy rollouts and n_prefix hybrid ones:
an expert-solution prefix of L = floor(l_t |y*|) tokens (|y*| in tokens) followed by the policy's
continuation,  o~ = [y*_{1:L} ; o_{L+1:}],  o_{L+1:} ~ pi_theta(. | q, y*_{1:L}); the reward scores
the whole hybrid trajectory. Every token of every row (prefix included) gets its trajectory's
Dr. GRPO advantage in a clipped policy gradient, except that low-entropy prefix tokens are left
out: only the top `top_entropy` fraction of the batch's prefix tokens by the policy's entropy
H_t keep their advantage (entropy-based clipping):
    A_i = r_i - mean_g r                                       (Dr. GRPO, no std)
    A_{i,t} = 0 if t is a prefix token with H_t < quantile_{1 - top_entropy}(H over prefix tokens)
    L = sum_{i,t} -min(rho A_{i,t}, clip(rho, 1 - eps, 1 + eps) A_{i,t}) m_{i,t} / (B * L_max)
    l_t = cosine(t: l_start -> l_end over the run)               (0.95 -> 0.05 in the paper)
Prefix tokens are off-policy: their pi_old is the current policy's probability of the expert
token (with one update per batch rho = 1 and the gradient is A * grad log pi). Entropies are
measured at collect time (= pi_old), so the kept set does not depend on micro-batching.
Values from the paper as summarised in its public descriptions: top 20 % prefix tokens by
entropy, Dr. GRPO loss, cosine prefix ratio 0.95 -> 0.05, one hybrid rollout per group.
The official code (github.com/ZeroYuHuang/prefix_rft, recipe/prefix_rft: core_algos.py,
dp_actor.py, config/prefix_rft_trainer.yaml; its run configs are not in the repository) differs
from this file in three ways; we keep the simpler form above:
  1. advantages of hybrid rows (`dr_grpo_prefix` estimator): continuation tokens get r_i minus the
     mean of the continuations sampled after the SAME prefix (nothing subtracted when there is
     one), prefix tokens that value minus the mean of the un-prefixed rollouts, divided by the
     continuations per prefix; ours: every token of row i gets r_i - mean over its whole group.
  2. entropy clipping is done in every loss call (each micro-batch, each update) on the current
     policy's entropies: the micro-batch's prefix tokens are sorted and the lowest
     int(n * ratio) zeroed, `ratio` from a schedule (off_ent_mask_ratio_ctrl: constant or linear
     decay); ours: once per collected batch from pi_old, the (1 - top_entropy) quantile of the
     whole batch's prefix entropies (every rank's, under torchrun), a fixed fraction.
  3. the loss: PPO clip with dual-clip (c = 3) on every token, prefix tokens included
     (enable_clip; off: prefix tokens unclipped), and an entropy bonus 0.001; the trainer's
     default aggregation is token-mean ("dr_grpo": a micro-batch's sum / max_tokens). Ours: no dual clip,
     no entropy bonus, aggregation "constant" (sum / (B * L_max) over the whole batch).
Updates per batch: the trainer defaults (1024 prompts per batch, ppo_mini_batch_size 256) give 4
optimizer steps per batch; ours 1 (updates_per_batch). lr 3e-4, 100 steps, 8 prompts x 8 rows
are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core import distributed
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import AggregationMode, group_advantages
from reference_impls.core.prefix import clipped_pg_loss, expert_mask, rollout_batch, token_prefix
from reference_impls.core.sampling import sample
from reference_impls.core.schedules import cosine
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward", "expert_solutions"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps
    batch_size: int = 64  # rows per step = prompts x group_size (hybrid rows included)
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    group_size: int = 8  # rows per prompt
    n_prefix: int = 1  # hybrid (expert prefix + continuation) rows per group
    l_start: float = 0.95  # prefix ratio at step 0 (paper: 0.95)
    l_end: float = 0.05  # prefix ratio at the last step (paper: 0.05)
    top_entropy: float = 0.2  # fraction of prefix tokens (highest entropy) that keep their advantage
    eps_low: float = 0.2  # clip range below 1
    eps_high: float = 0.2  # clip range above 1
    scale: Literal["std", "none"] = "none"  # advantage: r - mean (Dr. GRPO) | (r - mean)/std
    aggregation: AggregationMode = "constant"  # Dr. GRPO: sum / (B * max_new_tokens)
    temperature: float = 1.0  # sampling temperature
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)


def prefix_ratio(step: int, total: int, start: float = 0.95, end: float = 0.05) -> float:
    """l_t: cosine decay from `start` at step 0 to `end` at step `total` (core.schedules.cosine)."""
    return cosine(step, total, start, end)


def entropy_clipped_advantages(adv: Tensor, entropy: Tensor, prefix: Tensor,
                               top: float = 0.2) -> Tensor:
    """Per-token advantages: each row's A_i on every token, zeroed on the prefix tokens whose
    entropy is below the (1 - top) quantile of the batch's prefix-token entropies (under torchrun:
    every rank's prefix tokens, gathered).   adv [B]; entropy, prefix [B, T] -> [B, T]."""
    A = adv[:, None].expand_as(entropy).clone()  # [B, T]
    is_pre = prefix.bool()
    every = [h for part in distributed.gather_objects(entropy[is_pre].float().tolist()) for h in part]
    if every:
        thr = torch.quantile(torch.tensor(every), 1 - top)  # H threshold (linear interpolation)
        A[is_pre & (entropy < thr.to(entropy.device))] = 0.0  # low-entropy prefix tokens: no update
    return A


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        G, n_on = c.group_size, c.group_size - c.n_prefix
        l_t = prefix_ratio(step, c.steps, c.l_start, c.l_end)
        group = [p for p in problems for _ in range(G)]
        prefixes = [token_prefix(self.tok, p.solution, l_t) if j >= n_on else ""
                    for p in problems for j in range(G)]
        ro = sample(self.module, self.tok, [p.prompt for p in group], c.max_new_tokens,
                    c.temperature, prefixes=prefixes)
        rewards = torch.tensor([self.task.reward(p, o) for p, o in zip(group, ro.completions, strict=True)])
        adv = group_advantages(rewards, G, c.scale).to(ro.mask.device)
        logp, ent = sequence_logprobs(self.module, ro.input_ids, ro.attention_mask, c.temperature,
                                      return_entropy=True)  # pi_old [N, T-1]
        pre = expert_mask(ro)
        batch = rollout_batch(ro, ro.mask, forced=pre,
                              adv_tok=entropy_clipped_advantages(adv, ent, pre, c.top_entropy))
        if c.updates_per_batch > 1:
            batch["old_logp"] = logp
        hybrid = torch.tensor([j >= n_on for _ in problems for j in range(G)], dtype=torch.float)
        return batch, {"reward": (rewards * (1 - hybrid)).sum().item() / max(1.0, (1 - hybrid).sum().item()),
                       "reward_hybrid": (rewards * hybrid).sum().item() / max(1.0, hybrid.sum().item()),
                       "prefix_ratio": l_t, "prefix_tokens": pre.sum().item() / max(1.0, hybrid.sum().item())}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"], c.temperature)
        old = micro.get("old_logp", logp.detach())  # mu = 1: rho = 1, gradient A grad log pi
        return clipped_pg_loss(logp, old, micro["adv_tok"], micro["mask"], c.eps_low, c.eps_high,
                               c.aggregation, c.max_new_tokens, total_tokens=totals["tokens"],
                               total_seqs=totals["rows"])
