"""REINFORCE++ (Hu et al., arXiv 2501.03262): REINFORCE with PPO's token-level tricks and no critic.

Per completion token t, the KL to the frozen reference is a per-token penalty in the reward
(first-order estimator of the sampling policy, k1), and the return-to-go is the advantage:
    KL(t) = log pi_old(o_t | q, o_<t) - log pi_ref(o_t | q, o_<t)
    A_t   = r(o, q) - beta sum_{i >= t} KL(i)                         (gamma = 1)
then normalised over every token of the global batch (not per prompt; under torchrun over every
rank's tokens, core/distributed.moments):
    A_t <- (A_t - mean_batch A) / std_batch A
and trained with PPO's clipped surrogate (token ratios, no value model):
    rho_t = pi_theta(o_t | .) / pi_old(o_t | .)
    L = aggregate_t( -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t) )      (1/|o| per sequence)
`baseline="group"` is the paper's REINFORCE++-baseline: r minus the mean reward of the prompt's
group of `group_size` samples, before the global normalisation (here the KL stays in the reward;
the paper's later versions of that variant move it into the loss -- not done here).
Normalisation uses the unbiased std over the batch's completion tokens (verl's masked_whiten,
`reinforce_plus_plus` estimator). Defaults: eps = 0.2 and k1 KL in the reward follow the paper;
beta = 0.01, group_size = 1 (plain REINFORCE++), lr 3e-4, 64 prompts per step, T = 1 are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core import distributed
from reference_impls.core.diagnostics import clip_stats
from reference_impls.core.losses import AggregationMode, aggregate, kl_estimate
from reference_impls.core.pg import PGAlgo, SampledConfig, rollout
from reference_impls.core.train import Batch, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(SampledConfig):  # + steps, batch_size, lr, sampling: core/pg.py
    group_size: int = 1  # samples per prompt (1: REINFORCE++; > 1 with baseline="group")
    baseline: Literal["none", "group"] = "none"  # "group": REINFORCE++-baseline, r - group mean
    beta: float = 0.01  # per-token k1 KL penalty in the reward (ours)
    eps: float = 0.2  # PPO clip range of the token ratio
    aggregation: AggregationMode = "seq-mean-token-mean"  # 1/|o| per sequence, mean over sequences


def reinforce_pp_advantages(rewards: Tensor, mask: Tensor, kl: Tensor | None = None,
                            beta: float = 0.0, group_size: int = 1, baseline: str = "none",
                            eps: float = 1e-8) -> Tensor:
    """rewards [B], mask [B, T], kl [B, T] (k1 per token) -> whitened token advantages [B, T]."""
    r = rewards.float()
    if baseline == "group":  # REINFORCE++-baseline: subtract the prompt group's mean reward
        g = r.view(-1, group_size)
        r = (g - g.mean(-1, keepdim=True)).view(-1)
    r_tok = -beta * kl * mask if kl is not None else torch.zeros_like(mask)  # -beta KL(t)
    last = (mask * torch.arange(1, mask.shape[1] + 1, device=mask.device)).argmax(-1)  # [B]
    r_tok[torch.arange(len(r)), last] += r  # + r(o, q) at the last completion token
    ret = r_tok.flip(-1).cumsum(-1).flip(-1) * mask  # A_t = sum_{i >= t} r_i   (gamma = 1)
    mean, var, _ = distributed.moments(ret, mask, unbiased=True)  # over every rank's batch tokens
    return (ret - mean) * torch.rsqrt(var + eps) * mask  # global batch normalisation


def reinforce_pp_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                      eps: float = 0.2, aggregation: AggregationMode = "seq-mean-token-mean", *,
                      total_tokens: float | Tensor | None = None, total_seqs: int | None = None,
                      ) -> tuple[Tensor, dict[str, float]]:
    """All inputs [B, T] -> (scalar loss, stats)."""
    ratio = torch.exp(logp - old_logp)  # rho_t
    surr = torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - eps, 1 + eps) * advantages)
    loss = aggregate(-surr, mask, aggregation, total_tokens=total_tokens, total_seqs=total_seqs)
    return loss, clip_stats(ratio.detach(), advantages, mask, 1 - eps, 1 + eps, total_tokens)  # clip_frac, _low, _high


class Algo(PGAlgo):
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        super().__init__(model, tok, task, cfg, seed, ref=cfg.beta > 0)

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        batch, r = rollout(self, [p for p in problems for _ in range(c.group_size)])
        old_logp = self.logp(self.module, batch)  # pi_old: the sampling policy
        kl = kl_estimate(old_logp, self.logp(self.ref, batch), "k1") if self.ref is not None else None
        batch["advantages"] = reinforce_pp_advantages(r, batch["mask"], kl, c.beta, c.group_size, c.baseline)
        if c.updates_per_batch > 1:
            batch["old_logp"] = old_logp
        m = batch["mask"]
        stats = {"reward": r.mean().item(), "completion_len": m.sum(-1).mean().item()}
        if kl is not None:
            stats["kl"] = ((kl * m).sum() / m.sum()).item()
        return batch, stats

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, old = self.current(micro)
        return reinforce_pp_loss(logp, old, micro["advantages"], micro["mask"], c.eps, c.aggregation,
                                 total_tokens=totals["tokens"], total_seqs=totals["rows"])
