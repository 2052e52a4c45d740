"""REINFORCE Leave-One-Out, RLOO (Ahmadian et al., "Back to Basics", arXiv 2402.14740), sequence-level.

k completions y_1..y_k per prompt x; each one's baseline is the mean reward of the other k - 1:
    A_i = R(y_i, x) - 1/(k-1) sum_{j != i} R(y_j, x)
    grad J ~ 1/k sum_i A_i grad log pi_theta(y_i | x)                                (RLOO, eq. 7)
with the KL penalty inside the (sequence) reward, first-order (k1) estimator summed over tokens:
    R(y, x) = r(y, x) - beta sum_t [log pi_old(y_t | .) - log pi_ref(y_t | .)]
Loss (TRL 1.16 `RLOOTrainer`, whose conventions we follow and check against in tests):
    s_i = pi_theta(y_i|x) / pi_old(y_i|x)  (summed log-probs: one ratio per sequence)
    L = 1/B sum_i -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i)
s = 1 in value with one update per batch, and the gradient is the RLOO estimator above; the
clip only acts with `updates_per_batch` > 1 (TRL's num_iterations). `normalize_advantages`
(TRL option, off by default) whitens A over the batch.
Defaults: k = 4 (one of the paper's k = 2, 4), beta = 0.05, eps = 0.2 (TRL's RLOOConfig defaults);
lr 3e-4, 16 prompts x 4 completions per step, T = 1 are ours for the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core import distributed
from reference_impls.core.losses import group_advantages
from reference_impls.core.pg import PGAlgo, SampledConfig, rollout, sequence_pg_loss
from reference_impls.core.train import Batch, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(SampledConfig):  # + steps, batch_size, lr, sampling: core/pg.py
    group_size: int = 4  # k samples per prompt (paper: 2 or 4)
    beta: float = 0.05  # KL coefficient in the reward, k1 summed over tokens (TRL default 0.05)
    eps_low: float = 0.2  # sequence-ratio clip below 1 (TRL epsilon)
    eps_high: float = 0.2  # sequence-ratio clip above 1 (TRL epsilon_high)
    normalize_advantages: bool = False  # whiten A over the batch (TRL option, default off)


def rloo_advantages(rewards: Tensor, group_size: int, kl: Tensor | None = None, beta: float = 0.0,
                    normalize: bool = False, eps: float = 1e-4) -> Tensor:
    """R_i = r_i - beta * kl_i (kl_i: summed k1 KL of row i); A_i = R_i - mean_{j != i} R_j in its
    group; normalize: (A - mean A) / (std A + eps) over the batch (unbiased std, as TRL; under
    torchrun over every rank's rows, as TRL gathers the rewards first).  [N] -> [N]"""
    R = rewards.float() - beta * kl if kl is not None else rewards.float()  # R = r - beta KL
    adv = group_advantages(R, group_size, "loo")  # R_i - 1/(k-1) sum_{j!=i} R_j
    if not normalize:
        return adv
    mean, var, _ = distributed.moments(adv, torch.ones_like(adv), unbiased=True)  # global batch
    return (adv - mean) / (var.sqrt() + eps)


def rloo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, eps_low: float = 0.2,
              eps_high: float = 0.2, *, total_seqs: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """1/B sum_i -min(s_i A_i, clip(s_i) A_i), s_i = exp(sum_t logp - old_logp).   [B, T], [B] -> scalar"""
    return sequence_pg_loss(logp, old_logp, advantages, mask, eps_low, eps_high, total_seqs=total_seqs)


class Algo(PGAlgo):
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        super().__init__(model, tok, task, cfg, seed, ref=cfg.beta > 0)

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        batch, r = rollout(self, [p for p in problems for _ in range(c.group_size)])  # k consecutive copies
        kl = None
        if self.ref is not None:  # sum_t (log pi_old - log pi_ref) over completion tokens
            kl = ((self.logp(self.module, batch) - self.logp(self.ref, batch)) * batch["mask"]).sum(-1)
        batch["advantages"] = rloo_advantages(r, c.group_size, kl, c.beta, c.normalize_advantages)
        stats = {"reward": r.mean().item(), "completion_len": batch["mask"].sum(-1).mean().item()}
        if kl is not None:
            stats["kl"] = kl.mean().item()
        return self.finish(batch, with_ref=False), stats  # the KL lives in the reward, not the loss

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, old = self.current(micro)
        return rloo_loss(logp, old, micro["advantages"], micro["mask"], c.eps_low, c.eps_high,
                         total_seqs=totals["rows"])
