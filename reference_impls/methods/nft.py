"""NFT, Negative-aware Fine-Tuning (Chen et al., arXiv 2505.18116): supervised learning on the
policy's own answers that keeps the wrong ones. The old policy splits into a positive and a
negative part, pi_old = r_q pi+ + (1 - r_q) pi-, so fitting the implicit negative policy
pi-_theta = (pi_old - r_q pi_theta) / (1 - r_q) to the wrong answers trains pi_theta itself:
    R_t = pi_theta(y_t | .) / pi_old(y_t | .)                      (token ratio, official ratio_type="token")
    correct y:  l_t = -log R_t
    wrong y:    l_t = -log max_sg((1 - r_q R_t) / (1 - r_q), eps)   (max_sg: value clamped, gradient kept)
    L = sum_{i,t} (1 - r_q) l_{i,t} m / (B * L_max)                 (normalize=1: prompt weight 1 - r_q)
r_q = the prompt's correct rate in its group of G, clamped to [0.02, 0.98]. Under strict on-policy
training (R = 1) the gradient is -(1 - r_q) grad log pi on correct and +r_q grad log pi on wrong
answers: Dr. GRPO's (r - r_q) advantage, the paper's GRPO equivalence.
Official code (github.com/NVlabs/NFT, dp_actor.py + train_7B.sh), followed: clamp_negative eps = 1.0
(the wrong-answer term's value is clamped at >= 1 with a straight-through gradient), no clamp on
R (clamp_positive 0), R's exponent capped at 10, normalize=1 (`prompt_weight="none"` gives the
paper's unweighted sum; "sqrt" = normalize=2, sqrt((1-r)/r), GRPO-like), reduction sum over tokens
/ 1000 summed over rows (ours: / (B * L_max), Dr. GRPO's constant), G = 16, no entropy bonus.
The official run uses DAPO dynamic sampling (groups that are all correct or all wrong are
discarded and more prompts drawn); ours drops such groups' loss (`drop_uniform=True`) without
redrawing. It samples 512 prompts per batch and steps on mini-batches of 32 (train_7B.sh:
train_prompt_mini_bsz, ppo_epoch 1), 16 optimizer steps per batch; ours takes 1
(updates_per_batch; more stores pi_old, and R = pi / pi_old then differs from 1).
NFT needs no expert data. Defaults lr 3e-4, 60 steps, 8 prompts x 8 are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core.hybrid import correct, row_weights, sample_groups, wsum
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps (one sampled batch each)
    batch_size: int = 64  # completions per step = prompts x group_size
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    group_size: int = 8  # completions per prompt (official 16)
    clamp_negative: float = 1.0  # eps: floor of the negative likelihood ratio (official 1.0)
    rate_min: float = 0.02  # clamp of the correct rate r_q (official)
    rate_max: float = 0.98  # clamp of the correct rate r_q (official)
    prompt_weight: Literal["one_minus_r", "none", "sqrt"] = "one_minus_r"  # official normalize=1|0|2
    drop_uniform: bool = True  # no loss on all-correct / all-wrong groups (official resamples them)
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def clamp_keep_grad(x: Tensor, min_val: float) -> Tensor:
    """max(x, min_val) in value, d/dx = 1 everywhere (the official clamp_preserve_grad)."""
    return x + (torch.clamp(x, min=min_val) - x).detach()


def nft_loss(logp: Tensor, old_logp: Tensor, is_correct: Tensor, rate: Tensor, mask: Tensor,
             w: Tensor, clamp_negative: float = 1.0, rate_min: float = 0.02, rate_max: float = 0.98,
             prompt_weight: str = "one_minus_r") -> tuple[Tensor, dict[str, float]]:
    """logp, old_logp, mask [B, T]; is_correct (0/1), rate (the prompt's correct rate), w (row
    normalisers, 0 to drop a row) [B] -> (loss, stats)."""
    R = torch.exp((logp - old_logp).clamp(max=10.0))  # R_t = pi_theta / pi_old   [B, T]
    r = rate.clamp(rate_min, rate_max)[:, None]  # r_q in [0.02, 0.98]   [B, 1]
    pos = -torch.log(R)  # correct: -log R
    neg = -torch.log(clamp_keep_grad((1 - r * R) / (1 - r), clamp_negative))  # wrong: -log((1-r R)/(1-r))
    c = is_correct[:, None].float()
    loss_tok = c * pos + (1 - c) * neg
    if prompt_weight == "one_minus_r":
        loss_tok = loss_tok * (1 - r)  # normalize=1 (Dr. GRPO-like)
    elif prompt_weight == "sqrt":
        loss_tok = loss_tok * ((1 - r) / r).sqrt()  # normalize=2 (GRPO-like)
    return wsum(loss_tok, mask, w), {}


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        ro, rewards = sample_groups(self.module, self.tok, self.task, problems, c.group_size, c)
        dev = ro.mask.device
        ok = correct(rewards).to(dev)  # [N]
        rate = ok.view(-1, c.group_size).mean(-1).repeat_interleave(c.group_size)  # r_q per row
        keep = ((rate > 0) & (rate < 1)).float() if c.drop_uniform else torch.ones_like(rate)
        batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "mask": ro.mask,
                 "is_correct": ok, "rate": rate,
                 "w": keep * row_weights(ro.mask, torch.ones_like(keep), "constant", c.max_new_tokens)}
        # w = keep / (B * L_max), B = every rank's rows (dropped groups still count in B)
        if c.updates_per_batch > 1:  # pi_old differs from pi_theta after the first update
            batch["old_logp"] = sequence_logprobs(self.module, ro.input_ids, ro.attention_mask,
                                                  c.temperature)
        return batch, {"reward": rewards.mean().item(), "kept_groups": keep.mean().item(),
                       "completion_len": ro.mask.sum(-1).mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"],
                                 c.temperature)  # [b, T-1]
        old = micro.get("old_logp", logp.detach())
        return nft_loss(logp, old, micro["is_correct"], micro["rate"], micro["mask"], micro["w"],
                        c.clamp_negative, c.rate_min, c.rate_max, c.prompt_weight)
