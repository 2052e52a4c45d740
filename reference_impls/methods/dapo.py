"""DAPO, Decoupled Clip and Dynamic sAmpling Policy Optimization (Yu et al., arXiv 2503.14476).

GRPO's group advantages with four changes and no KL term:
  clip-higher      rho clipped to [1 - eps_low, 1 + eps_high], eps_high > eps_low (0.2 / 0.28)
  token-level loss one mean over all the batch's tokens (long answers weigh by their length)
  dynamic sampling keep only groups with mixed accuracy, 0 < #{o_i correct} < G; sample more
                   prompts until the batch is full (here: at most `max_tries` rounds)
  overlong         truncated samples (no EOS within the budget) are masked out of the loss
                   (overlong filtering), and a soft length penalty joins the reward:
                   R_len(y) = 0 if |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache
                   if L_max - L_cache < |y| <= L_max; -1 beyond                    (eq. 13)
    A_i = (R_i - mean_g R) / std_g R,   R_i = r_i + R_len(o_i)
    J = E[ 1/sum_i |o_i| sum_i sum_t min(rho_{i,t} A_i, clip(rho_{i,t}, 1 - eps_low, 1 + eps_high) A_i) ]
        s.t. 0 < |{o_i : is_equivalent(a, o_i)}| < G                                 (eq. 8)
L_max = max_new_tokens (the generation budget), L_cache = round(overlong_frac * L_max) (the paper:
4096 of 20480, i.e. 0.2). "Correct" (the filter's accuracy) is reward >= `threshold`. When the
tries run out, the batch has fewer groups; with none kept, the last round is used unfiltered.
Under torchrun each rank samples and fills its share of the step's batch_size // G groups, so N
ranks together train on at most batch_size rows, as one process does.
Checked against TRL 1.16 `loss_type="dapo"` (the loss); the sampling and length rules by hand.
Defaults: eps 0.2 / 0.28, G = 8 (sic, 16 in the paper), no KL follow the paper; max_tries = 3,
lr 3e-4, 8 prompts x 8 completions per step, T = 1 are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.losses import AggregationMode, grpo_loss
from reference_impls.core.pg import (
    PGAlgo,
    ScaleRewards,
    group_rows,
    mixed_groups,
    overlong_penalty,
    rebuild,
    rollout,
    scaled_advantages,
    truncated,
)
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps (filled batches)
    batch_size: int = 64  # completions per step = prompts x group_size (after filtering)
    lr: float = 3e-4  # peak learning rate (AdamW; ours)
    group_size: int = 8  # G completions per prompt (paper: 16)
    eps_low: float = 0.2  # clip of the token ratio below 1
    eps_high: float = 0.28  # clip-higher: clip above 1
    dynamic_sampling: bool = True  # drop groups that are all right or all wrong, resample
    max_tries: int = 3  # sampling rounds per step at most (ours)
    threshold: float = 1.0  # a sample is correct if its reward >= threshold
    overlong_filter: bool = True  # mask truncated samples (no EOS) out of the loss
    overlong_frac: float = 0.2  # soft punishment buffer L_cache / L_max (0: off; paper 4096/20480)
    temperature: float = 1.0  # sampling (and scoring) temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget = L_max (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)
    aggregation: AggregationMode = "token-mean"  # DAPO's token-level loss (other modes: core/pg.py)
    scale_rewards: ScaleRewards = "group"  # (R - mean_g)/std_g; batch | none: core/pg.py


def dapo_rewards(rewards: Tensor, lengths: Tensor, max_len: int, overlong_frac: float) -> Tensor:
    """R = r + R_len(|o|) with L_cache = max(1, round(overlong_frac * max_len)).   [B] -> [B]"""
    if overlong_frac <= 0:
        return rewards.float()
    return rewards.float() + overlong_penalty(lengths, max_len, max(1, round(overlong_frac * max_len)))


def dapo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, eps_low: float = 0.2,
              eps_high: float = 0.28, *, total_tokens: float | Tensor | None = None,
              aggregation: AggregationMode = "token-mean", max_len: int | None = None,
              total_seqs: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """sum_{i,t} -min(rho A_i, clip(rho, 1-eps_low, 1+eps_high) A_i) / sum_i |o_i|.   [B, T], [B] -> scalar"""
    return grpo_loss(logp, old_logp, advantages, mask, eps_low=eps_low, eps_high=eps_high,
                     aggregation=aggregation, max_len=max_len, total_tokens=total_tokens,
                     total_seqs=total_seqs)


class Algo(PGAlgo):
    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c, G = self.cfg, self.cfg.group_size
        rng, want = step_rng(self.seed, step), c.batch_size // G  # prompts wanted (all ranks)
        parts, rows, kept, first, quota = [], [], 0, None, None
        for _ in range(c.max_tries if c.dynamic_sampling else 1):
            problems = self.task.prompts(want, rng)  # under torchrun: this rank's share
            quota = len(problems) if quota is None else quota  # groups this rank fills
            b, r = rollout(self, [p for p in problems for _ in range(G)])
            first = r if first is None else first
            R = dapo_rewards(r, b["mask"].sum(-1), c.max_new_tokens, c.overlong_frac)
            b["R"] = R  # advantages once the batch is final (scale_rewards="batch": its std)
            b["truncated"] = truncated(b, self.tok.eos_token_id).float()
            keep = (mixed_groups((r >= c.threshold).float(), G) if c.dynamic_sampling
                    else torch.ones(len(problems), dtype=torch.bool, device=r.device))  # mixed accuracy only
            keep &= torch.cumsum(keep.long(), 0) <= quota - kept  # no more groups than still needed
            parts.append(b)
            rows.append(group_rows(keep, G))
            kept += int(keep.sum())
            if kept >= quota:
                break
        if kept == 0:  # nothing informative: the last round, unfiltered
            rows[-1] = list(range(len(r)))
        batch = rebuild(parts, rows, self.tok.pad_token_id)
        trunc = batch.pop("truncated")
        batch["advantages"] = scaled_advantages(batch.pop("R"), G, c.scale_rewards)  # (R - mean) / (std + 1e-4)
        length = batch["mask"].sum(-1).float().mean().item()  # |o| (EOS included), before filtering
        if c.overlong_filter:
            batch["mask"] = batch["mask"] * (1 - trunc).unsqueeze(-1)  # overlong filtering
        return self.finish(batch), {"reward": first.mean().item(), "tries": float(len(parts)),
                                    "kept_groups": float(kept), "truncated_frac": trunc.mean().item(),
                                    "completion_len": length}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, old = self.current(micro)
        return dapo_loss(logp, old, micro["advantages"], micro["mask"], c.eps_low, c.eps_high,
                         total_tokens=totals["tokens"].clamp(min=1), aggregation=c.aggregation,
                         max_len=c.max_new_tokens, total_seqs=totals["rows"])
