"""A shortcut task: a cue in the prompt that gives the answer away in training, but not out of
distribution (the design of RL-Wall, arXiv 2505.22756, in text form).

    prompt "7|4+7+6="   completion "17"       the cue "7" before "|" is one digit

In training and on the ID split the cue equals the last digit of the answer with probability
`cue_corr` (otherwise a uniformly random digit); on the OOD split it is always a uniformly random
digit (so it matches 1 time in 10, by chance). The arithmetic is the same in both splits: chains of
`min_ops`..`max_ops` single-digit additions. A model that reads the cue instead of adding scores
well ID and falls OOD; one that adds does not care. Options: cue_corr, min_ops, max_ops,
per_level, eval_seed. Reward: exact match of the sum.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from reference_impls.tasks.base import Problem, Task
from reference_impls.tasks.ladder import exact


@dataclass
class Shortcut(Task):
    name: str = "shortcut"
    cue_corr: float = 0.9
    min_ops: int = 1
    max_ops: int = 3
    per_level: int = 100
    eval_seed: int = 5151

    def __post_init__(self):
        if not 0.0 <= self.cue_corr <= 1.0 or not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"shortcut: need 0 <= cue_corr <= 1 and 1 <= min_ops <= max_ops (got cue_corr="
                             f"{self.cue_corr}, min_ops={self.min_ops}, max_ops={self.max_ops})")

    max_new_tokens = 5

    def draw(self, rng: random.Random, ops: int, corr: float) -> Problem:
        xs = [rng.randint(0, 9) for _ in range(ops + 1)]
        s = str(sum(xs))
        cue = s[-1] if rng.random() < corr else str(rng.randint(0, 9))
        return Problem(prompt=f"{cue}|" + "+".join(map(str, xs)) + "=", solution=s, answer=s, steps=tuple(s),
                       meta=(ops, cue == s[-1]))

    @cached_property
    def eval_sets(self) -> dict[str, list[Problem]]:
        rng = random.Random(self.eval_seed)
        out: dict[str, list[Problem]] = {}
        for split, corr in (("in_distribution", self.cue_corr), ("out_of_distribution", 0.1)):
            seen: dict[str, Problem] = {}
            for ops in range(self.min_ops, self.max_ops + 1):
                want = len(seen) + min(self.per_level, 10 ** (ops + 1) // 5)
                while len(seen) < want:
                    p = self.draw(rng, ops, corr)
                    seen.setdefault(p.prompt[2:], p)  # one cue per chain: ID and OOD chains differ
            out[split] = list(seen.values())
        return out

    @cached_property
    def held_out(self) -> frozenset[str]:
        return frozenset(p.prompt[2:] for s in self.eval_sets.values() for p in s)

    def problems(self, n: int, rng: random.Random) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < n:
            p = self.draw(rng, rng.randint(self.min_ops, self.max_ops), self.cue_corr)
            if p.prompt[2:] not in self.held_out:
                out.append(p)
        return out

    def wrong_completion(self, problem: Problem, rng: random.Random) -> str:
        s = int(problem.answer)
        return str(s + 1 if s < 2 else s + rng.choice([1, -1, 2, -2]))

    def alphabet(self) -> set[str]:
        return set("0123456789+=|")

    reward = staticmethod(exact)
