"""A difficulty ladder: chains of additions, difficulty = number of `+` operations.

    difficulty 3:   prompt "4+7+1+9="   completion "21"        (operands of `digits` digits)

Splits (the knobs are `--task-option KEY=VALUE`):
  in-distribution      difficulties 1..`max_id` (uniform over difficulties)
  out-of-distribution  difficulties `max_id`+1 .. `max_id`+`ood_extra` (uniform)
Training draws ID problems, plus a **sliver** (`sliver`, a fraction of training problems) drawn
from the OOD difficulties, so that the warm-start base has seen a little of them and sits off zero
OOD (the design of arXiv 2512.07783: a small exposure in pre-training is what lets RL move a skill
beyond the base's competence). Training never draws a held-out evaluation problem (ID or OOD).
`per_level` (eval problems per difficulty, at most a fifth of that difficulty's distinct problems,
so that training keeps most of every level) sets the size of each split; the
accuracy of each difficulty is in `eval_sets` too, as `difficulty_<d>` (for per-level curves).

`rl_levels` ("4", "1-3"; default: none) makes RL prompts (`task.prompts`) come from those levels
only, while demonstrations (the warm start, SFT) keep the training distribution above: the same
base, RL data aimed below, at, or beyond its edge of competence.

Measured bases (tiny preset, seed 0, defaults max_id=3, ood_extra=1, sliver=0.01): 600 warm-start
steps (`--base-steps 600`, what `sftrl findings` uses) give 88.2 % greedy ID and 17.0 % OOD; the
runner's default 400 steps leave the base at ~28 % ID and 0 % OOD, so use 600 or more.

Reward: exact match of the sum (1.0 / 0.0). A wrong completion: the sum off by a small amount.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from reference_impls.tasks.base import Problem, Task


def chain(operands: tuple[int, ...]) -> Problem:
    s = str(sum(operands))
    return Problem(prompt="+".join(map(str, operands)) + "=", solution=s, answer=s, steps=tuple(s),
                   meta=len(operands) - 1)


def exact(problem: Problem, completion: str) -> float:
    """1.0 if the completion (stripped) is the answer."""
    return float(completion.strip() == problem.answer)


@dataclass
class Ladder(Task):
    """Options: max_id (hardest ID difficulty), ood_extra (OOD levels above it), sliver (fraction
    of training problems from the OOD levels), digits (operand digits), per_level, eval_seed,
    per_level_sets (also expose each difficulty as its own eval set)."""

    name: str = "ladder"
    max_id: int = 3
    ood_extra: int = 1
    sliver: float = 0.01
    digits: int = 1
    per_level: int = 100
    eval_seed: int = 4242
    per_level_sets: bool = False
    rl_levels: str = ""  # "4" or "1-3": RL prompts (task.prompts) come from these levels only

    def _rl_levels(self) -> list[int]:
        lo, _, hi = str(self.rl_levels).partition("-")
        return list(range(int(lo), int(hi or lo) + 1))

    def __post_init__(self):
        try:
            bad_rl = bool(self.rl_levels) and min(self._rl_levels()) < 1
        except ValueError:
            bad_rl = True
        if bad_rl:
            raise ValueError(f"ladder: rl_levels must look like '4' or '1-3' (got {self.rl_levels!r})")
        if self.max_id < 1 or self.ood_extra < 1 or not 0.0 <= self.sliver <= 1.0 or self.digits < 1:
            raise ValueError("ladder: need max_id >= 1, ood_extra >= 1, 0 <= sliver <= 1, digits >= 1 "
                             f"(got max_id={self.max_id}, ood_extra={self.ood_extra}, sliver={self.sliver}, digits={self.digits})")

    @property
    def id_levels(self) -> list[int]:
        return list(range(1, self.max_id + 1))

    @property
    def ood_levels(self) -> list[int]:
        return list(range(self.max_id + 1, self.max_id + self.ood_extra + 1))

    @property
    def max_new_tokens(self) -> int:
        return len(str((10**self.digits - 1) * (self.max_id + self.ood_extra + 1))) + 2

    def draw(self, rng: random.Random, level: int) -> Problem:
        lo = 0 if self.digits == 1 else 10 ** (self.digits - 1)
        return chain(tuple(rng.randint(lo, 10**self.digits - 1) for _ in range(level + 1)))

    def level_size(self, level: int) -> int:
        """How many distinct problems difficulty `level` has."""
        lo = 0 if self.digits == 1 else 10 ** (self.digits - 1)
        return (10**self.digits - lo) ** (level + 1)

    def _split(self, rng: random.Random, levels: list[int]) -> list[Problem]:
        out: list[Problem] = []
        for d in levels:
            seen: dict[str, Problem] = {}
            want = min(self.per_level, self.level_size(d) // 5)  # training keeps >= 80 % of a level
            while len(seen) < want:
                p = self.draw(rng, d)
                seen.setdefault(p.prompt, p)
            out += sorted(seen.values(), key=lambda p: p.prompt)
        return out

    @cached_property
    def eval_sets(self) -> dict[str, list[Problem]]:
        rng = random.Random(self.eval_seed)
        sets = {"in_distribution": self._split(rng, self.id_levels),
                "out_of_distribution": self._split(rng, self.ood_levels)}
        if self.per_level_sets:
            for split in ("in_distribution", "out_of_distribution"):
                for p in sets[split]:
                    sets.setdefault(f"difficulty_{p.meta}", []).append(p)
        return sets

    @cached_property
    def held_out(self) -> frozenset[str]:
        return frozenset(p.prompt for k in ("in_distribution", "out_of_distribution") for p in self.eval_sets[k])

    def problems(self, n: int, rng: random.Random) -> list[Problem]:
        """n training problems: ID levels, and a `sliver` of OOD levels; never an eval problem."""
        out: list[Problem] = []
        while len(out) < n:
            levels = self.ood_levels if rng.random() < self.sliver else self.id_levels
            p = self.draw(rng, rng.choice(levels))
            if p.prompt not in self.held_out:
                out.append(p)
        return out

    def prompts(self, n: int, rng: random.Random) -> list[Problem]:
        """RL prompts: the training distribution, or only `rl_levels` when set (never an eval problem)."""
        if not self.rl_levels:
            return self.problems(n, rng)
        out: list[Problem] = []
        while len(out) < n:
            p = self.draw(rng, rng.choice(self._rl_levels()))
            if p.prompt not in self.held_out:
                out.append(p)
        return out

    def wrong_completion(self, problem: Problem, rng: random.Random) -> str:
        s = int(problem.answer)
        w = s + rng.choice([1, -1, 2, -2, 10, -10])
        return str(w if w >= 0 else s + 1)

    def alphabet(self) -> set[str]:
        return set("0123456789+=")

    reward = staticmethod(exact)
