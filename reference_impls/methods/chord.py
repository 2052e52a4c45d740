"""CHORD (Zhang et al., "On-Policy RL Meets Off-Policy Experts: Harmonizing Supervised
Fine-Tuning and Reinforcement Learning via Dynamic Weighting", arXiv 2508.11408): SFT on expert
data as an auxiliary loss inside on-policy GRPO, weighted globally by mu and per token by phi.
    L = (1 - mu_t) L_GRPO + mu_t L_SFT-phi
    L_SFT-phi = -mean_{expert tokens} sg[phi(p_t)] log p_t,   phi(p) = p (1 - p),  p_t = pi_theta(y*_t | .)
    mu_t: linear 0 -> mu_peak over `mu_warmup_steps`, cosine mu_peak -> mu_valley over `mu_decay_steps`,
          then mu_valley                                          (CHORD-mu; phi is CHORD-phi)
L_GRPO: PPO-clipped GRPO, A = (r - mean) / (std + eps) over each prompt's G rollouts, token mean
over the rollout tokens of the batch; L_SFT-phi: token mean over the expert tokens of the batch.
phi vanishes at p = 0 and p = 1: expert tokens the policy already predicts, or finds implausible,
barely move it, which keeps SFT from overriding what RL found.
Official code (modelscope/Trinity-RFT, policy_loss_fn/chord_policy_loss.py, examples/mix_chord/
mix_chord.yaml), followed: both mu and phi on (enable_phi_function), mu_peak 0.5 -> mu_valley 0.02,
warmup:decay = 200:400 steps (ours 20:40 for 60 steps), clip 0.2, 8 rollouts per prompt, expert
data a separate SFT set at 20 % of the rows (64 expert per 256 rollouts). The paper's separate
variants: CHORD-mu = phi off with mu 0.9 -> 0.05 (`phi=False`); CHORD-phi = constant mu 0.1
(mu_peak = mu_valley = 0.1, mu_warmup_steps = 0). lr 3e-4, 8 prompts x 8 rollouts + 16 expert
rows per step are ours for the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.hybrid import row_weights, sample_groups, to_batch, wsum
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import group_advantages
from reference_impls.core.sampling import cat_rollouts, expert_rollout
from reference_impls.core.schedules import warmup_cosine
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward", "demonstrations"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps (one sampled batch each)
    batch_size: int = 64  # rollouts per step = prompts x group_size
    expert_rows: int = 16  # demonstrations per step (official 20 % of the rows)
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    group_size: int = 8  # rollouts per prompt (official repeat_times 8)
    mu_peak: float = 0.5  # peak SFT weight (official example 0.5; paper CHORD-mu 0.9)
    mu_valley: float = 0.02  # final SFT weight (official example 0.02; paper CHORD-mu 0.05)
    mu_warmup_steps: int = 20  # linear 0 -> mu_peak (official 200; ours, scaled to 60 steps)
    mu_decay_steps: int = 40  # cosine mu_peak -> mu_valley (official 400; ours, scaled)
    phi: bool = True  # token weight phi = p (1 - p) on the SFT loss (CHORD-phi)
    eps: float = 0.2  # PPO clip range of the GRPO part
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def mu_at(step: int, cfg: Config) -> float:
    """CHORD-mu: warmup then cosine decay (Trinity-RFT mu_schedule_function)."""
    return warmup_cosine(step, cfg.mu_warmup_steps, cfg.mu_warmup_steps + cfg.mu_decay_steps,
                         cfg.mu_peak, cfg.mu_valley)


def chord_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, is_expert: Tensor, mask: Tensor,
               w_rl: Tensor, w_sft: Tensor, mu: float, phi: bool = True,
               eps: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """logp, old_logp, mask [B, T]; advantages, is_expert (0/1), w_rl, w_sft [B]; mu scalar."""
    A = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    pg = -torch.minimum(ratio * A, torch.clamp(ratio, 1 - eps, 1 + eps) * A)  # -min(rho A, clip(rho) A)
    e = is_expert[:, None].float()
    grpo = wsum(pg * (1 - e), mask, w_rl)
    p = torch.exp(logp).detach()
    weight = p * (1 - p) if phi else torch.ones_like(p)  # sg[phi(p)] = p (1 - p)
    sft = wsum(-weight * logp * e, mask, w_sft)  # -sg[phi] log p on expert tokens
    return (1 - mu) * grpo + mu * sft, {"grpo_loss": grpo.item(), "sft_loss": sft.item()}


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        rng = step_rng(self.seed, step)
        problems = self.task.prompts(c.batch_size // c.group_size, rng)
        ro, rewards = sample_groups(self.module, self.tok, self.task, problems, c.group_size, c)
        demos = self.task.demonstrations(c.expert_rows, rng)
        ex = expert_rollout(self.tok, [p for p, _ in demos], [s for _, s in demos], ro.mask.device)
        both = cat_rollouts([ro, ex], self.tok.pad_token_id)
        dev = both.mask.device
        is_expert = torch.cat([torch.zeros(len(ro)), torch.ones(len(ex))]).to(dev)
        adv = group_advantages(rewards, c.group_size, "std", eps=1e-6)
        batch = to_batch(both)
        batch.update(advantages=torch.cat([adv, torch.zeros(len(ex))]).to(dev), is_expert=is_expert,
                     w_rl=row_weights(both.mask, 1 - is_expert), w_sft=row_weights(both.mask, is_expert))
        if c.updates_per_batch > 1:  # pi_old differs from pi_theta after the first update
            batch["old_logp"] = sequence_logprobs(self.module, both.input_ids, both.attention_mask,
                                                  c.temperature)
        self._mu = mu_at(step, c)
        return batch, {"reward": rewards.mean().item(), "mu": self._mu,
                       "completion_len": ro.mask.sum(-1).mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"],
                                 c.temperature)  # [b, T-1]
        old = micro.get("old_logp", logp.detach())
        return chord_loss(logp, old, micro["advantages"], micro["is_expert"], micro["mask"],
                          micro["w_rl"], micro["w_sft"], self._mu, c.phi, c.eps)
