"""BREAD: Branched Rollouts from Expert Anchors (Zhang, Huang, Li, Ni, Chen, Oymak, arXiv 2506.17211).

A GRPO variant for small models. Each prompt q gets G rollouts o_i ~ pi_theta(. | q). When every
one of them fails, BREAD branches: it inserts a short expert prefix ("anchor") made of the first
k steps of the expert solution y* = (s_1, ..., s_E) and samples G continuations
    o_i ~ pi_theta(. | q, s_1..s_k),    r_i = R(q, s_1..s_k o_i)   (the prefix counts in the answer)
growing k until some branch succeeds (at most `max_tries` anchors, k <= E - 1), and trains on
that branched group, so (almost) every update holds a success. The loss is GRPO's on the tokens
the policy sampled (methods/grpo.py: grpo_loss):
    A_i = (r_i - mean_g r) / (std_g r + eps);  L = aggregate(-min(rho A_i, clip(rho) A_i) + beta k3)
Expert-prefix tokens are context, not trained (train_prefix=True also gives them the advantage).
Anchor rule: search="grow" (k = 1, 2, ... up to the first success, the rule of the brief) or
"binary" (binary search for the shortest successful k, as we read the paper's Episode Anchor
Search). We found no official code, and our tools did not reach the paper's algorithm section;
the rule and its defaults (max_tries 3, success = reward >= 1) are ours, to be checked against
the paper. Groups whose anchor search finds no success train on the longest anchor tried.
GRPO defaults (G = 8, eps 0.2, beta 0.04, seq-mean-token-mean) from methods/grpo.py; lr 3e-4,
100 steps, 8 prompts x 8 rollouts are ours for the tiny preset. `reward` logs the unguided
rollouts (comparable to GRPO); `reward_trained` the rows actually trained on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import AggregationMode, group_advantages, grpo_loss
from reference_impls.core.prefix import (
    AnchorSearch,
    policy_mask,
    rollout_batch,
    step_prefix,
    take_rows,
)
from reference_impls.core.sampling import cat_rollouts, sample
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward", "expert_solutions", "solution_steps"}  # signals asked of the task
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps
    batch_size: int = 64  # rollouts per step = prompts x group_size
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    group_size: int = 8  # G rollouts per prompt (and per branched anchor)
    search: Literal["grow", "binary"] = "grow"  # anchor rule: k = 1, 2, ... | binary search on k
    max_tries: int = 3  # most anchors tried per failed group (ours)
    success_reward: float = 1.0  # a rollout succeeds when its reward reaches this
    train_prefix: bool = False  # also apply the advantage to the expert-prefix tokens
    eps_low: float = 0.2  # clip range below 1 (GRPO: 0.2)
    eps_high: float = 0.2  # clip range above 1
    beta: float = 0.04  # k3 KL to the reference (GRPO paper: 0.04; 0 drops the reference)
    aggregation: AggregationMode = "seq-mean-token-mean"  # token-loss averaging (core/losses.aggregate)
    scale: Literal["std", "none"] = "std"  # advantage: (r - mean)/std | r - mean
    temperature: float = 1.0  # sampling temperature
    max_new_tokens: int = 6  # completion budget after the prompt / anchor (the runner sets the task's)


def branch_groups(model, tok, task, problems, G: int, c: Config) -> tuple[list, list[Tensor], dict]:
    """Sample G rollouts per problem; re-sample the all-fail groups from growing expert anchors.
    Returns per-problem (Rollout of G rows, rewards [G]) and stats."""
    def roll(probs, prefixes):
        ro = sample(model, tok, [p.prompt for p in probs], c.max_new_tokens, c.temperature, prefixes=prefixes)
        return ro, torch.tensor([task.reward(p, o) for p, o in zip(probs, ro.completions, strict=True)])

    group = [p for p in problems for _ in range(G)]
    ro, r = roll(group, None)
    groups = [take_rows(ro, list(range(i * G, (i + 1) * G))) for i in range(len(problems))]
    rewards = list(r.view(len(problems), G))
    searches = {i: AnchorSearch(len(p.steps or ()), c.search, c.max_tries) for i, p in enumerate(problems)
                if bool((rewards[i] < c.success_reward).all())}
    fail_frac = len(searches) / max(1, len(problems))
    found: dict[int, dict[int, tuple]] = {i: {} for i in searches}
    while pending := [i for i, s in searches.items() if not s.done]:
        probs = [problems[i] for i in pending for _ in range(G)]
        pre = [step_prefix(problems[i].steps, searches[i].k) for i in pending for _ in range(G)]
        bro, br = roll(probs, pre)
        for j, i in enumerate(pending):
            rows, rr = take_rows(bro, list(range(j * G, (j + 1) * G))), br[j * G:(j + 1) * G]
            found[i][searches[i].k] = (rows, rr)
            searches[i].update(bool((rr >= c.success_reward).any()))
    ks = []
    for i, s in searches.items():
        if s.chosen is not None:
            groups[i], rewards[i] = found[i][s.chosen]
            ks.append(s.chosen)
    return groups, rewards, {"reward": r.mean().item(), "fail_frac": fail_frac, "branched_frac": len(ks) / max(1, len(problems)),
                             "anchor_steps": sum(ks) / max(1, len(ks))}


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        groups, rewards, stats = branch_groups(self.module, self.tok, self.task, problems,
                                               c.group_size, c)
        ro = cat_rollouts(groups, self.tok.pad_token_id)
        r = torch.cat(rewards)
        batch = rollout_batch(ro, ro.mask if c.train_prefix else policy_mask(ro), forced=ro.forced,
                              advantages=group_advantages(r, c.group_size, c.scale).to(ro.mask.device))
        if self.ref is not None:
            batch["ref_logp"] = self._logp(self.ref, batch)
        if c.updates_per_batch > 1:
            batch["old_logp"] = self._logp(self.module, batch)
        return batch, {**stats, "reward_trained": r.mean().item()}

    def _logp(self, model, b: Batch) -> Tensor:
        return sequence_logprobs(model, b["input_ids"], b["attention_mask"], self.cfg.temperature)

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp = self._logp(self.module, micro)  # [n, T-1]
        old = micro.get("old_logp", logp.detach())
        return grpo_loss(logp, old, micro["advantages"], micro["mask"], micro.get("ref_logp"),
                         c.eps_low, c.eps_high, c.beta, c.aggregation, c.max_new_tokens,
                         total_tokens=totals["tokens"], total_seqs=totals["rows"])
