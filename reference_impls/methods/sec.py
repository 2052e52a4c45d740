"""SEC: Self-Evolving Curriculum (Chen et al., Self-Evolving Curriculum for LLM Reasoning,
arXiv 2505.14970), on GRPO.

Curriculum selection as a non-stationary multi-armed bandit whose arms are problem categories
(difficulty levels). The bandit's reward for a category is the learning gain it just gave,
measured by the mean absolute advantage of its rollouts, and its values follow TD(0):
    r_t(c)      = 1/|B_c| sum_{i in B_c} |A_i|                 (B_c: the step's rollouts of category c)
    Q_{t+1}(c)  = alpha r_t(c) + (1 - alpha) Q_t(c)            (only categories drawn at step t)
    pi_t(c)     = exp(Q_t(c) / tau) / sum_c' exp(Q_t(c') / tau) (Boltzmann curriculum policy)
Each of the step's prompt slots draws a category from pi_t, then a problem of that category;
the LLM is trained with GRPO on the batch. Q starts at 0 (uniform curriculum).
Categories (generic, no task-specific code): `problem.meta["difficulty"]` (or "level") when the
task provides one; otherwise `n_categories` quantile buckets of a size proxy, len(prompt) +
len(solution or answer), whose edges come from a calibration draw of 512 problems at start-up
(on addition: 2-digit sums vs 3-digit sums, i.e. with or without a final carry). The task can
only be asked for random problems, so each step draws `pool_factor` x the needed candidates and
fills each slot from its category's candidates (a category with none left is not drawn).
Defaults: alpha = 0.5, tau = 1 are the paper's as we read it (not re-checked against the text
here); pool_factor, n_categories, lr 3e-4, 100 steps are ours (GRPO part as rl_data.GroupConfig).
Q is saved with extra_state(), so a resumed run is exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from reference_impls.core.rl_data import GroupAlgo, GroupConfig
from reference_impls.core.train import Batch, step_rng

NEEDS = {"verifiable_reward"}
STARTS_FROM_BASE = True


@dataclass
class Config(GroupConfig):
    bandit_lr: float = 0.5  # alpha: TD(0) step of Q(c) toward the category's mean |advantage| (paper 0.5)
    temperature_bandit: float = 1.0  # tau: Boltzmann temperature of the curriculum policy (paper 1.0)
    n_categories: int = 3  # size buckets when the task gives no difficulty (ours)
    pool_factor: int = 4  # candidates drawn per prompt slot, to fill the chosen categories (ours)


def td0_update(q: dict[str, float], rewards: dict[str, float], alpha: float) -> dict[str, float]:
    """Q(c) <- alpha r(c) + (1 - alpha) Q(c) for the categories in `rewards` (new ones start at 0)."""
    out = dict(q)
    for c, r in rewards.items():
        out[c] = alpha * r + (1 - alpha) * out.get(c, 0.0)
    return out


def boltzmann(q: dict[str, float], cats: list[str], tau: float) -> list[float]:
    """pi(c) proportional to exp(Q(c) / tau) over `cats` (unseen categories have Q = 0)."""
    z = [q.get(c, 0.0) / tau for c in cats]
    m = max(z)
    w = [math.exp(v - m) for v in z]
    return [x / sum(w) for x in w]


def category_rewards(cats: list[str], advantages: torch.Tensor, G: int) -> dict[str, float]:
    """r(c) = mean |A_i| over the rollouts of the prompts of category c (G rollouts per prompt)."""
    absA = advantages.abs().view(-1, G).mean(-1).tolist()  # per prompt (equal G: = per rollout)
    out: dict[str, list[float]] = {}
    for c, a in zip(cats, absA, strict=True):
        out.setdefault(c, []).append(a)
    return {c: sum(v) / len(v) for c, v in out.items()}


def difficulty(problem) -> str | None:
    meta = getattr(problem, "meta", None)
    if isinstance(meta, Mapping):
        for key in ("difficulty", "level"):
            if meta.get(key) is not None:
                return f"{key}={meta[key]}"
    return None


def size(problem) -> int:
    return len(problem.prompt) + len(problem.solution or problem.answer or "")


class Algo(GroupAlgo):
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        super().__init__(model, tok, task, cfg, seed)
        self.q: dict[str, float] = {}
        calib = task.prompts(512, random.Random(seed * 7_919 + 17))  # a fixed draw: same edges on resume
        sizes = sorted(size(p) for p in calib)
        k = max(1, cfg.n_categories)
        self.edges = sorted({sizes[min(len(sizes) - 1, (j * len(sizes)) // k)] for j in range(1, k)})

    def category(self, problem) -> str:
        if (d := difficulty(problem)) is not None:
            return d
        return f"size_bucket={sum(size(problem) >= e for e in self.edges)}"

    def select_prompts(self, step: int) -> tuple[list, list[str]]:
        c, rng = self.cfg, step_rng(self.seed, step)
        n = max(1, c.batch_size // c.group_size)
        pool: dict[str, list] = {}
        for p in self.task.prompts(n * c.pool_factor, rng):
            pool.setdefault(self.category(p), []).append(p)
        problems, cats = [], []
        for _ in range(n):
            avail = sorted(k for k, v in pool.items() if v)
            cat = rng.choices(avail, weights=boltzmann(self.q, avail, c.temperature_bandit))[0]
            problems.append(pool[cat].pop(0))
            cats.append(cat)
        return problems, cats

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        G = self.cfg.group_size
        problems, cats = self.select_prompts(step)
        batch, rewards, _ = self.sample_groups(problems, G)
        batch = self.finish(batch, rewards, G)
        r = category_rewards(cats, batch["advantages"].cpu(), G)
        self.q = td0_update(self.q, r, self.cfg.bandit_lr)
        known = sorted(self.q)
        pi = boltzmann(self.q, known, self.cfg.temperature_bandit)
        return batch, {"reward": rewards.mean().item(), "n_categories_drawn": float(len(r)),
                       "curriculum_entropy": -sum(p * math.log(p) for p in pi if p > 0),
                       "completion_len": batch["mask"].sum(-1).mean().item()}

    def extra_state(self) -> dict:
        return {"q": self.q}

    def load_extra_state(self, state: dict) -> None:
        if state:
            self.q = dict(state["q"])
