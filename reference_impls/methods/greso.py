"""GRESO: GRPO with Efficient Selective Rollout (Zheng et al., Act Only When It Pays: Efficient
Reinforcement Learning for LLM Reasoning via Selective Rollouts, arXiv 2506.02177; official code
github.com/Infini-AI-Lab/GRESO, verl/trainer/ttis/presampling_selector.py and ray_trainer.py).

A group whose G rewards are all equal has zero advantage and teaches nothing, and a prompt that
gave such a group tends to give one again. GRESO skips such prompts *before* rollout:
    z_q        = number of consecutive most recent visits of prompt q whose group had zero reward
                 variance, all of one kind: easy (all solved) or hard (all failed)
    P(keep q)  = max(p_kind ^ z_q, 0.01)        (1 for a prompt with no such streak)
and adapts the exploration probabilities p_easy, p_hard after every step so that the fraction of
rolled-out prompts that are zero-variance easy (hard) tracks its target:
    p_kind <- max(p_kind - delta, p_min)  if  frac_kind >= target_kind  else  min(p_kind + delta, p_max)
    target_easy = target / 3,  target_hard = 2 target / 3     (more exploration of hard prompts)
Candidate prompts are drawn and filtered until the step's `batch_size / G` prompts are kept (at
most `max_rounds` draws of that many), then GRPO runs on their rollouts.
Defaults from the official scripts/code: p_easy = p_hard = 0.5 initially, target = 0.25, delta =
0.01, p in [0.05, 0.95], keep floor 0.01. Ours: a zero-variance group is "easy" if its common
reward is >= easy_min = 0.5 (the code tests mean reward >= 0.98 / <= 0.11 on its {0, 0.1, 1}
rewards; on 0/1 rewards both read "all solved / all failed"); p adapts from the first step (the
code from the second epoch); we train on every kept group (the official runs add DAPO dynamic
sampling, i.e. also drop zero-variance groups after rollout and sample more); the history is a
streak per prompt text, saved with extra_state() so a resumed run is exact. Tiny-preset lr,
steps and batch sizes are ours (rl_data.GroupConfig).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reference_impls.core.rl_data import GroupAlgo, GroupConfig
from reference_impls.core.train import Batch, step_rng

NEEDS = {"verifiable_reward"}
STARTS_FROM_BASE = True


@dataclass
class Config(GroupConfig):
    p_easy: float = 0.5  # initial exploration probability of easy (all-solved) prompts (official 0.5)
    p_hard: float = 0.5  # initial exploration probability of hard (all-failed) prompts (official 0.5)
    target_zero_variance: float = 0.25  # target fraction of zero-variance prompts: 1/3 easy, 2/3 hard
    p_delta: float = 0.01  # step of the p adaptation (official 0.01)
    p_min: float = 0.05  # lower bound of p_easy / p_hard (official 0.05)
    p_max: float = 0.95  # upper bound of p_easy / p_hard (official 0.95)
    keep_floor: float = 0.01  # minimum keep probability of any prompt (official 0.01)
    easy_min: float = 0.5  # a zero-variance group is easy if its reward >= this, else hard (ours)
    max_rounds: int = 4  # candidate draws per step to fill the batch with kept prompts (ours)


def group_kind(rewards: list[float], easy_min: float = 0.5) -> str | None:
    """"easy" / "hard" for a zero-variance group (all rewards equal), None otherwise."""
    if max(rewards) - min(rewards) > 1e-9:
        return None
    return "easy" if rewards[0] >= easy_min else "hard"


def next_streak(streak: list | None, kind: str | None) -> list | None:
    """The streak [kind, count] after one more visit of the prompt (None: the group had variance)."""
    if kind is None:
        return None
    return [kind, streak[1] + 1] if streak is not None and streak[0] == kind else [kind, 1]


def keep_probability(streak: list | None, p_easy: float, p_hard: float, floor: float = 0.01) -> float:
    """max(p_kind ^ count, floor); 1 for a prompt without a zero-variance streak."""
    if streak is None:
        return 1.0
    p = p_easy if streak[0] == "easy" else p_hard
    return max(p ** streak[1], floor)


def adapt(p: float, frac: float, target: float, delta: float, p_min: float, p_max: float) -> float:
    """Skip more (lower p) when the zero-variance fraction reached its target, else explore more."""
    return max(p - delta, p_min) if frac >= target else min(p + delta, p_max)


class Algo(GroupAlgo):
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        super().__init__(model, tok, task, cfg, seed)
        self.p_easy, self.p_hard = cfg.p_easy, cfg.p_hard
        self.streaks: dict[str, list] = {}  # prompt text -> [kind, consecutive zero-variance visits]

    def select_prompts(self, step: int) -> tuple[list, int]:
        """The step's kept prompts and how many candidates were skipped (data = f(seed, step, state))."""
        c, rng = self.cfg, step_rng(self.seed, step)
        want, kept, skipped, cand = max(1, c.batch_size // c.group_size), [], 0, []
        for _ in range(c.max_rounds):
            for p in (cand := self.task.prompts(want, rng)):
                pk = keep_probability(self.streaks.get(p.prompt), self.p_easy, self.p_hard, c.keep_floor)
                if rng.random() < pk:
                    kept.append(p)
                else:
                    skipped += 1
                if len(kept) == want:
                    return kept, skipped
        return kept or cand[:1], skipped  # never an empty batch

    def observe(self, problems: list, rewards: torch.Tensor, G: int) -> tuple[float, float]:
        """Update the streaks and p_easy / p_hard from the step's groups; returns (easy, hard) fractions."""
        c, counts = self.cfg, {"easy": 0, "hard": 0}
        for i, p in enumerate(problems):
            kind = group_kind(rewards[i * G:(i + 1) * G].tolist(), c.easy_min)
            if kind:
                counts[kind] += 1
            if (s := next_streak(self.streaks.get(p.prompt), kind)) is None:
                self.streaks.pop(p.prompt, None)
            else:
                self.streaks[p.prompt] = s
        easy, hard = counts["easy"] / len(problems), counts["hard"] / len(problems)
        t = c.target_zero_variance
        self.p_easy = adapt(self.p_easy, easy, t / 3, c.p_delta, c.p_min, c.p_max)
        self.p_hard = adapt(self.p_hard, hard, 2 * t / 3, c.p_delta, c.p_min, c.p_max)
        return easy, hard

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        G = self.cfg.group_size
        problems, skipped = self.select_prompts(step)
        batch, rewards, _ = self.sample_groups(problems, G)
        easy, hard = self.observe(problems, rewards, G)
        batch = self.finish(batch, rewards, G)
        return batch, {"reward": rewards.mean().item(), "skipped": float(skipped),
                       "easy_frac": easy, "hard_frac": hard, "p_easy": self.p_easy,
                       "p_hard": self.p_hard, "completion_len": batch["mask"].sum(-1).mean().item()}

    def extra_state(self) -> dict:
        return {"p_easy": self.p_easy, "p_hard": self.p_hard, "streaks": self.streaks}

    def load_extra_state(self, state: dict) -> None:
        if state:
            self.p_easy, self.p_hard = state["p_easy"], state["p_hard"]
            self.streaks = {k: list(v) for k, v in state["streaks"].items()}
