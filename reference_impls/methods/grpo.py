"""Group Relative Policy Optimization (Shao et al., DeepSeekMath, arXiv 2402.03300), with DAPO's
clip-higher and token-mean aggregation (arXiv 2503.14476) and Dr. GRPO's unscaled advantages and
constant normaliser (arXiv 2503.20783) as options.

For each prompt, sample a group of G completions, reward them, and set
    A_i = (r_i - mean(r)) / (std(r) + eps)   (scale_rewards="group"; "batch": batch std; "none": Dr. GRPO)
    rho_{i,t} = pi_theta(o_{i,t} | q, o_{i,<t}) / pi_old(o_{i,t} | q, o_{i,<t})
    l_{i,t} = -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i) + beta * k3_{i,t}
    k3 = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1
    L = aggregate(l, mask, mode)    seq-mean-token-mean (GRPO) | token-mean (DAPO) | constant (Dr. GRPO)
                                    | token-sum | seq-mean-token-sum   (both knobs: core/pg.py)
Defaults: G = 8, eps = 0.2, beta = 0.04, seq-mean-token-mean, std scaling, one update per batch
(mu = 1) follow the GRPO paper; DAPO uses eps_high = 0.28, beta = 0, token-mean. lr 3e-4, 100 steps, 8 prompts
x 8 completions per step, temperature 1 are ours for the tiny preset.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import AggregationMode, grpo_loss
from reference_impls.core.pg import ScaleRewards, scaled_advantages
from reference_impls.core.sampling import sample
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps
    batch_size: int = 64  # completions per step = prompts x group_size
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    group_size: int = 8  # G completions sampled per prompt
    eps_low: float = 0.2  # clip range below 1 (GRPO paper: 0.2)
    eps_high: float = 0.2  # clip range above 1 (DAPO clip-higher: 0.28)
    beta: float = 0.04  # weight of the k3 KL to the reference (GRPO paper: 0.04; 0 drops the reference)
    aggregation: AggregationMode = "seq-mean-token-mean"  # how token losses are averaged (core/losses.aggregate)
    scale_rewards: ScaleRewards = "group"  # advantage: (r - mean_g)/std_g | /std_batch | r - mean_g (Dr. GRPO) | loo (core/pg.py)
    temperature: float = 1.0  # sampling temperature (log-probs are scored at the same T)
    top_p: float = 1.0  # nucleus sampling (1: off)
    max_new_tokens: int = 6  # completion budget (the runner sets the task's unless given)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


# grpo_loss(logp, old_logp, A, mask, ref_logp, ...): the surrogate above, in core/losses.py


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        group = [p for p in problems for _ in range(c.group_size)]  # G consecutive copies [N]
        ro = sample(self.module, self.tok, [p.prompt for p in group], c.max_new_tokens,
                    c.temperature, c.top_p, cache_implementation=c.sampler_cache)
        rewards = torch.tensor([self.task.reward(p, o) for p, o in zip(group, ro.completions, strict=True)])
        batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "mask": ro.mask,
                 "advantages": scaled_advantages(rewards, c.group_size, c.scale_rewards).to(ro.mask.device)}
        if self.ref is not None:
            batch["ref_logp"] = self._logp(self.ref, batch)  # [N, T-1]
        if c.updates_per_batch > 1:  # pi_old differs from pi_theta after the first update
            batch["old_logp"] = self._logp(self.module, batch)
        return batch, {"reward": rewards.mean().item(), "completion_len": ro.mask.sum(-1).mean().item()}

    def _logp(self, model, b: Batch, entropy: bool = False):
        return sequence_logprobs(model, b["input_ids"], b["attention_mask"], self.cfg.temperature,
                                 return_entropy=entropy)

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, ent = self._logp(self.module, micro, entropy=True)  # [n, T-1] x2
        micro["_entropy"] = ent.detach()  # for the entropy diagnostic (core/diagnostics.py)
        old = micro.get("old_logp", logp.detach())  # mu = 1: pi_old = pi_theta (ratio 1, grad A)
        return grpo_loss(logp, old, micro["advantages"], micro["mask"], micro.get("ref_logp"),
                         c.eps_low, c.eps_high, c.beta, c.aggregation, c.max_new_tokens,
                         total_tokens=totals["tokens"], total_seqs=totals["rows"])
