"""Proximal Policy Optimization (Schulman et al., arXiv 1707.06347) as used in RLHF (Ziegler et
al., arXiv 1909.08593; InstructGPT, arXiv 2203.02155): a KL penalty to the reference inside the
reward, a learned critic, GAE, clipped policy and value losses.

Per completion token t (state s_t = prompt + o_{<t}):
    r_t   = -kl_coef * (log pi_old(o_t) - log ref(o_t))  [+ R_task(o) at the last token]   (k1 KL)
    delta_t = r_t + gamma V(s_{t+1}) - V(s_t);   A_t = sum_l (gamma lam)^l delta_{t+l}   (GAE,
            Schulman et al., arXiv 1506.02438);  R_t = A_t + V(s_t)   (value targets)
    L_pi = token-mean( -min(rho A, clip(rho, 1-eps, 1+eps) A) ),  rho = pi_theta / pi_old
    L_V  = token-mean( 0.5 max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2) )
    L    = L_pi + vf_coef L_V
The critic is a separate copy of the starting policy's backbone with a linear value head (zero
init), as TRL's PPO used a separate value model. Advantages are whitened over the batch's tokens.
Each collected batch gets `updates_per_batch` (PPO epochs) full-batch optimizer steps.
Defaults: eps = 0.2, clip_value = 0.2, gamma = 1, lam = 0.95, vf_coef = 0.1, kl_coef = 0.05,
4 epochs follow TRL's PPOConfig / the RLHF setups; lr 3e-4, 40 steps, 64 prompts per step are ours.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reference_impls.core import distributed
from reference_impls.core.diagnostics import clip_stats
from reference_impls.core.logprobs import position_ids, sequence_logprobs
from reference_impls.core.losses import aggregate, kl_estimate
from reference_impls.core.sampling import sample
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 40  # optimizer steps (collected batches)
    batch_size: int = 64  # prompts per step (one completion each)
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    updates_per_batch: int = 4  # PPO epochs over each batch
    clip_eps: float = 0.2  # policy ratio clip
    clip_value: float = 0.2  # value clip around the old values
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE lambda
    vf_coef: float = 0.1  # weight of the value loss
    kl_coef: float = 0.05  # KL-in-reward coefficient
    whiten: bool = True  # normalise advantages over the batch's tokens
    temperature: float = 1.0  # sampling temperature
    max_new_tokens: int = 6  # completion budget (the runner sets the task's unless given)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95,
        ) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation over the masked (contiguous) tokens of each row.
    rewards, values, mask [B, T] -> (advantages [B, T], returns [B, T]); zero where mask == 0."""
    B, T = rewards.shape
    mask = mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)  # A_{t+1}
    for t in reversed(range(T)):
        next_m = mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)  # 0 after the last token
        next_v = values[:, t + 1] * next_m if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]  # delta_t = r_t + g V_{t+1} - V_t
        last = delta + gamma * lam * next_m * last  # A_t = delta_t + g lam A_{t+1}
        adv[:, t] = last
    adv = adv * mask
    return adv, (adv + values) * mask  # R_t = A_t + V_t


def ppo_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                    clip_eps: float = 0.2, *, total_tokens: float | Tensor | None = None) -> Tensor:
    """token-mean( -min(rho A, clip(rho, 1-eps, 1+eps) A) ); all inputs [B, T]."""
    ratio = torch.exp(logp - old_logp)  # rho [B, T]
    surr = torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages)
    return aggregate(-surr, mask, "token-mean", total_tokens=total_tokens)


def ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                   clip_value: float = 0.2, *, total_tokens: float | Tensor | None = None) -> Tensor:
    """token-mean( 0.5 max((V-R)^2, (clip(V, V_old-c, V_old+c) - R)^2) ); all inputs [B, T]."""
    v_clip = old_values + torch.clamp(values - old_values, -clip_value, clip_value)
    loss_tok = 0.5 * torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2)
    return aggregate(loss_tok, mask, "token-mean", total_tokens=total_tokens)


def whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked entries (under torchrun: every rank's)."""
    mean, var, _ = distributed.moments(x, mask)  # biased variance over the global batch's tokens
    return (x - mean) * torch.rsqrt(var + eps) * mask


class Critic(nn.Module):
    """V(s_t): a copy of the policy's backbone + a linear head on the last hidden state."""

    def __init__(self, policy):
        super().__init__()
        self.body = copy.deepcopy(policy.base_model)
        self.head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """-> values [B, T-1], aligned with token_logprobs (V of the state before token t+1)."""
        h = self.body(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids(attention_mask)).last_hidden_state  # [B, T, H]
        return self.head(h[:, :-1]).squeeze(-1).float()


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.tok, self.task, self.cfg, self.seed = tok, task, cfg, seed
        self.policy = model
        self.module = nn.ModuleDict({"policy": model, "critic": Critic(model)})
        self.ref = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size, step_rng(self.seed, step))
        ro = sample(self.policy, self.tok, [p.prompt for p in problems], c.max_new_tokens,
                    c.temperature, cache_implementation=c.sampler_cache)
        score = torch.tensor([self.task.reward(p, o) for p, o in zip(problems, ro.completions, strict=True)])
        ids, am, mask = ro.input_ids, ro.attention_mask, ro.mask  # mask [B, T-1]
        old_logp = sequence_logprobs(self.policy, ids, am, c.temperature)  # [B, T-1]
        ref_logp = sequence_logprobs(self.ref, ids, am, c.temperature)  # [B, T-1]
        values = self.module["critic"](ids, am)  # [B, T-1]
        kl = kl_estimate(old_logp, ref_logp, "k1")  # [B, T-1]
        rewards = -c.kl_coef * kl * mask  # r_t = -kl_coef * (log pi_old - log ref)
        last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)  # [B] last token
        rows = torch.arange(len(problems), device=mask.device)
        rewards[rows, last] += score.to(rewards.device)  # + R_task at the last completion token
        adv, ret = gae(rewards, values, mask, c.gamma, c.lam)
        if c.whiten:
            adv = whiten(adv, mask)
        batch = {"input_ids": ids, "attention_mask": am, "mask": mask, "old_logp": old_logp,
                 "old_values": values, "advantages": adv, "returns": ret}
        return batch, {"reward": score.mean().item(),
                       "kl": ((kl * mask).sum() / mask.sum()).item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c, n = self.cfg, totals["tokens"]
        logp, ent = sequence_logprobs(self.policy, micro["input_ids"], micro["attention_mask"], c.temperature,
                                      return_entropy=True)
        micro["_entropy"] = ent.detach()  # the entropy diagnostic (core/diagnostics.py)
        values = self.module["critic"](micro["input_ids"], micro["attention_mask"])
        pl = ppo_policy_loss(logp, micro["old_logp"], micro["advantages"], micro["mask"], c.clip_eps,
                             total_tokens=n)
        vl = ppo_value_loss(values, micro["old_values"], micro["returns"], micro["mask"],
                            c.clip_value, total_tokens=n)
        clip = clip_stats(torch.exp(logp - micro["old_logp"]).detach(), micro["advantages"], micro["mask"],
                          1 - c.clip_eps, 1 + c.clip_eps, n)
        return pl + c.vf_coef * vl, {"policy_loss": pl.item(), "value_loss": vl.item(), **clip}
