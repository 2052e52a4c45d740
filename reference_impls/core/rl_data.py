"""Group-rollout machinery shared by the entropy-control and data-centric RL methods
(entropy_bonus, clip_cov, kl_cov, entropy_advantage, greso, pods, sec).

Every one of them is GRPO (methods/grpo.py) with one part changed: the loss (entropy bonus,
Clip-Cov, KL-Cov, entropy-shaped advantage) or which prompts / rollouts are trained on (GRESO,
PODS, SEC). `GroupConfig` holds the GRPO options they all share (defaults as grpo.Config, except
beta = 0: the KL-free setting of the entropy papers' DAPO recipes, and no reference model);
`GroupAlgo` samples G completions per prompt and builds the batch; a method overrides
`prompts(step)` (which prompts), `select(...)` (which rollouts) or `loss(...)`.
`token_pg_loss` is the PPO-clip surrogate with per-token advantages [B, T] (grpo_loss takes one
advantage per sequence).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import AggregationMode, grpo_loss, kl_estimate
from reference_impls.core.pg import ScaleRewards, scaled_advantages
from reference_impls.core.sampling import sample
from reference_impls.core.train import Batch, TrainConfig, step_rng


@dataclass
class GroupConfig(TrainConfig):
    steps: int = 100  # optimizer steps (collected batches)
    batch_size: int = 64  # completions trained on per step = prompts x group_size
    lr: float = 3e-4  # peak learning rate (ours for the tiny preset, as grpo)
    group_size: int = 8  # completions sampled per prompt (G)
    eps_low: float = 0.2  # PPO clip: ratio >= 1 - eps_low
    eps_high: float = 0.2  # PPO clip: ratio <= 1 + eps_high
    beta: float = 0.0  # k3 KL penalty to the initial policy (0: none, no reference model kept)
    aggregation: AggregationMode = "seq-mean-token-mean"  # token loss -> scalar (core.losses.aggregate)
    scale_rewards: ScaleRewards = "group"  # group advantage: /std_g | /std_batch | none | loo (core/pg.py)
    temperature: float = 1.0  # sampling (and scoring) temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x over mask == 1.   [B, T], [B, T] -> scalar"""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def token_pg_loss(logp: Tensor, old_logp: Tensor, adv: Tensor, eps_low: float = 0.2,
                  eps_high: float = 0.2) -> tuple[Tensor, Tensor]:
    """Per-token PPO-clip surrogate  l = -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A)  with
    rho = exp(logp - old_logp). logp, old_logp [B, T]; adv [B] or [B, T] -> (l [B, T], clipped [B, T])."""
    A = adv.unsqueeze(-1) if adv.dim() == 1 else adv  # [B, 1] or [B, T]
    ratio = torch.exp(logp - old_logp)  # rho [B, T]
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    loss_tok = -torch.minimum(ratio * A, clipped * A)  # [B, T]
    was_clipped = ((ratio < 1 - eps_low) & (A < 0)) | ((ratio > 1 + eps_high) & (A > 0))
    return loss_tok, was_clipped


def add_ref_kl(loss_tok: Tensor, logp: Tensor, ref_logp: Tensor | None, beta: float) -> Tensor:
    """loss_tok + beta * k3(pi_theta || pi_ref) per token (GRPO's penalty); unchanged without a reference."""
    if ref_logp is None or beta == 0:
        return loss_tok
    return loss_tok + beta * kl_estimate(logp, ref_logp, "k3")


def take_rows(batch: Batch, rows: Tensor | list[int]) -> Batch:
    """The batch restricted to `rows` (every tensor is rows first)."""
    idx = torch.as_tensor(rows, dtype=torch.long)
    return {k: v[idx.to(v.device)] for k, v in batch.items()}


class GroupAlgo:
    """GRPO's collect, split into overridable parts:
    prompts(step) -> problems;  rollout(problems) -> (batch, rewards [N], group size);
    the batch holds input_ids, attention_mask, mask, advantages (and ref_logp / old_logp if needed)."""

    needs_old_logp = False  # store pi_old log-probs even at updates_per_batch = 1

    def __init__(self, model, tok, task, cfg: GroupConfig, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None

    def prompts(self, step: int) -> list:
        c = self.cfg
        return self.task.prompts(max(1, c.batch_size // c.group_size), step_rng(self.seed, step))

    def sample_groups(self, problems: list, group_size: int) -> tuple[Batch, Tensor, list]:
        """G consecutive samples of each problem, scored.   -> (batch without advantages, rewards [N], group)"""
        c = self.cfg
        group = [p for p in problems for _ in range(group_size)]  # [N = len(problems) * G]
        ro = sample(self.module, self.tok, [p.prompt for p in group], c.max_new_tokens,
                    c.temperature, c.top_p, cache_implementation=c.sampler_cache)
        rewards = torch.tensor([float(self.task.reward(p, o))
                                for p, o in zip(group, ro.completions, strict=True)])
        batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "mask": ro.mask}
        return batch, rewards, group

    def finish(self, batch: Batch, rewards: Tensor, group_size: int) -> Batch:
        """Add group advantages and the reference / pi_old log-probs the loss needs."""
        c = self.cfg
        batch["advantages"] = scaled_advantages(rewards, group_size, c.scale_rewards).to(batch["mask"].device)
        if self.ref is not None:
            batch["ref_logp"] = self._logp(self.ref, batch)  # [N, T-1]
        if c.updates_per_batch > 1 or self.needs_old_logp:
            batch["old_logp"] = self._logp(self.module, batch)  # pi_old [N, T-1]
        return batch

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        batch, rewards, _ = self.sample_groups(self.prompts(step), self.cfg.group_size)
        batch = self.finish(batch, rewards, self.cfg.group_size)
        return batch, {"reward": rewards.mean().item(), "completion_len": batch["mask"].sum(-1).mean().item()}

    def _logp(self, model, b: Batch, entropy: bool = False):
        return sequence_logprobs(model, b["input_ids"], b["attention_mask"], self.cfg.temperature,
                                 return_entropy=entropy)

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, ent = self._logp(self.module, micro, entropy=True)  # [n, T-1] x2
        micro["_entropy"] = ent.detach()  # the entropy diagnostic (core/diagnostics.py)
        old = micro.get("old_logp", logp.detach())
        return grpo_loss(logp, old, micro["advantages"], micro["mask"], micro.get("ref_logp"),
                         c.eps_low, c.eps_high, c.beta, c.aggregation, c.max_new_tokens,
                         total_tokens=totals["tokens"], total_seqs=totals["rows"])
