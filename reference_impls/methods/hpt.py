"""HPT, Hybrid Post-Training (Lv et al., "Towards a Unified View of Large Language Model
Post-Training", arXiv 2509.04419): SFT and RL are instances of one policy-gradient estimator, and
HPT switches between them per prompt by the policy's own performance. For each prompt, sample n
rollouts and count the correct ones, P:
    P <= gate:  drop the rollouts, train on the expert solution:  L_SFT = -mean_t log pi(y*_t)
    P >  gate:  GRPO on the n rollouts, A_i = r_i - mean(r):     l = -rho A   (rho = pi/pi_old)
    L = alpha * L_RL + beta * L_SFT     (alpha, beta = 1, 1: each prompt feeds exactly one of them)
L_SFT: token mean over the expert tokens of the batch; L_RL: sum / (B_RL * L_max) over the RL rows
(Dr. GRPO's constant); entropy bonus -c_H mean_t H_t on all rows.
Official code (github.com/TsinghuaC3I/Unify-Post-Training, exp_scripts/train.sh), followed:
unify_strategy="switch", switch_gate=0 of n=8 (SFT only on prompts no rollout solves),
sft_loss_coef 1.0, grpo_use_std=False, loss_remove_clip=True (clip=True: PPO clip), entropy
coefficient 0.001. The paper's general form allows any gate; `gate` exposes it. Not followed:
  * normaliser: with loss_remove_token_mean=True the code (hpt/verl/verl/mix_src/mix_core_alg.py)
    divides each micro-batch's PG token sum by L_max (max_response_length) and not by its rows,
    while L_SFT (compute_sft_pure_loss) and the entropy bonus are that micro-batch's token means:
    the official RL term weighs about (rows per micro-batch x mean length / L_max) times ours
    against L_SFT, so the SFT-vs-RL balance differs. Ours: the whole-batch normalisers above
    (independent of micro-batching).
  * updates per batch: 128 prompts per batch, ppo_mini_batch_size 64 -> 2 optimizer steps per
    batch; ours 1 (updates_per_batch; 2 reproduces the count).
Defaults lr 3e-4, 60 steps, 8 prompts x 8 rollouts are ours for the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.hybrid import (
    correct_counts,
    expert_rows,
    row_weights,
    sample_groups,
    take,
    to_batch,
    wsum,
)
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import group_advantages
from reference_impls.core.sampling import cat_rollouts
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward", "expert_solutions"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps (one sampled batch each)
    batch_size: int = 64  # rollouts sampled per step = prompts x group_size
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    group_size: int = 8  # rollouts per prompt (official n = 8)
    gate: int = 0  # SFT on the expert solution when at most `gate` rollouts are correct (official 0)
    sft_coef: float = 1.0  # beta, weight of the SFT loss (official sft_loss_coef)
    clip: bool = False  # PPO-clip the ratio (official loss_remove_clip=True: no clip)
    eps: float = 0.2  # clip range when clip=True
    entropy_coef: float = 0.001  # entropy bonus (official entropy_coeff)
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def hpt_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, is_sft: Tensor, mask: Tensor,
             w_rl: Tensor, w_sft: Tensor, sft_coef: float = 1.0, clip: bool = False,
             eps: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """logp, old_logp, mask [B, T]; advantages, is_sft (0/1), w_rl, w_sft (row normalisers) [B]."""
    A = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    pg = -ratio * A  # -rho A
    if clip:
        pg = torch.maximum(pg, -torch.clamp(ratio, 1 - eps, 1 + eps) * A)
    s = is_sft[:, None].float()
    rl = wsum(pg * (1 - s), mask, w_rl)  # GRPO on prompts above the gate
    sft = wsum(-logp * s, mask, w_sft)  # NLL of the expert solution on prompts at/below the gate
    return rl + sft_coef * sft, {"rl_loss": rl.item(), "sft_loss": sft.item()}


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c, G = self.cfg, self.cfg.group_size
        problems = self.task.prompts(c.batch_size // G, step_rng(self.seed, step))
        ro, rewards = sample_groups(self.module, self.tok, self.task, problems, G, c)
        to_sft = (correct_counts(rewards, G) <= c.gate).tolist()  # [P] the switch
        keep = [i for i in range(len(ro)) if not to_sft[i // G]]  # rollouts of RL prompts
        adv = group_advantages(rewards, G, "none")
        sft_problems = [p for p, s in zip(problems, to_sft, strict=True) if s]
        parts, adv_parts, sft_rows = [], [], []
        if keep:
            parts.append(take(ro, keep))
            adv_parts.append(adv[keep])
            sft_rows.append(torch.zeros(len(keep)))
        if sft_problems:
            ex, _ = expert_rows(self.tok, self.task, sft_problems, ro.mask.device)
            parts.append(ex)
            adv_parts.append(torch.zeros(len(ex)))
            sft_rows.append(torch.ones(len(ex)))
        both = cat_rollouts(parts, self.tok.pad_token_id) if len(parts) > 1 else parts[0]
        dev = both.mask.device
        is_sft = torch.cat(sft_rows).to(dev)
        batch = to_batch(both)
        batch.update(advantages=torch.cat(adv_parts).to(dev), is_sft=is_sft,
                     w_rl=row_weights(both.mask, 1 - is_sft, "constant", c.max_new_tokens),
                     w_sft=row_weights(both.mask, is_sft),
                     w_tok=row_weights(both.mask, torch.ones_like(is_sft)))
        if c.updates_per_batch > 1:  # pi_old differs from pi_theta after the first update
            batch["old_logp"] = sequence_logprobs(self.module, both.input_ids, both.attention_mask,
                                                  c.temperature)
        return batch, {"reward": rewards.mean().item(), "sft_prompts": sum(to_sft) / len(to_sft),
                       "completion_len": ro.mask.sum(-1).mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, ent = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"],
                                      c.temperature, return_entropy=True)  # [b, T-1]
        old = micro.get("old_logp", logp.detach())
        loss, stats = hpt_loss(logp, old, micro["advantages"], micro["is_sft"],
                               micro["mask"], micro["w_rl"], micro["w_sft"], c.sft_coef, c.clip, c.eps)
        entropy = wsum(ent, micro["mask"], micro["w_tok"])
        return loss - c.entropy_coef * entropy, {**stats, "entropy": entropy.item()}
