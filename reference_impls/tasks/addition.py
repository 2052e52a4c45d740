"""Multi-digit addition: prompt "12+34=", completion "46" (+ EOS, added by the batching code).

With `cot=True` (`--task-option cot=true`) the solution is worked carry by carry, one line per
column from the right, then the sum:  "47+85=" -> "7+5=12\n4+8+1=13\n132"  (steps = the lines).
Without it, the steps of "132" are its digits. The reward reads the last line.

Splits: in-distribution = both operands with `digits_id` digits (2 by default); out-of-distribution
= `digits_ood` digits (3). Training draws ID problems, never one of the held-out evaluation set.
One task yields every supervision signal of the taxonomy:
  demonstrations      (prompt, correct answer)                          -> SFT
  preference pairs    (prompt, correct, wrong)                          -> DPO / IPO
  unpaired labels     (prompt, completion, is_correct)                  -> KTO-style
  prompts + reward    exact match, 1.0 or 0.0                           -> PPO / GRPO
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from reference_impls.tasks.base import Task


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    cot: bool = False
    rejected = None  # no stored wrong completion: Addition.wrong_completion makes one
    label = None
    meta = None

    @property
    def prompt(self) -> str:
        return f"{self.a}+{self.b}="

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def steps(self) -> tuple[str, ...]:
        """Carry-by-carry lines (cot), else the digits of the sum; "".join(steps) == solution."""
        if not self.cot:
            return tuple(self.answer)
        lines, carry, a, b = [], 0, self.a, self.b
        while a or b:
            da, db = a % 10, b % 10
            terms = f"{da}+{db}" + (f"+{carry}" if carry else "")
            carry, s = divmod(da + db + carry, 10)
            lines.append(f"{terms}={10 * carry + s}\n")
            a, b = a // 10, b // 10
        return (*lines, self.answer)

    @property
    def solution(self) -> str:
        return "".join(self.steps)


def reward(problem: Problem, completion: str) -> float:
    """Exact match: 1.0 if the completion (EOS stripped; its last line with cot) is the sum."""
    text = completion.strip()
    return float((text.split("\n")[-1].strip() if problem.cot else text) == problem.answer)


def wrong_answer(problem: Problem, rng: random.Random) -> str:
    """A plausible wrong sum: off by +-1, +-10, +-100 or a small random amount."""
    s = problem.a + problem.b
    delta = rng.choice([1, -1, 10, -10, 100, -100, rng.randint(2, 9), -rng.randint(2, 9)])
    w = s + delta
    return str(w if w >= 0 and w != s else s + 1)


@dataclass
class Addition(Task):
    """Options (`--task-option k=v`): digits_id, digits_ood (the OOD knob: more digits), cot,
    eval_size, eval_seed."""

    name: str = "addition"
    digits_id: int = 2
    digits_ood: int = 3
    eval_size: int = 200
    eval_seed: int = 12345
    cot: bool = False

    def _draw(self, rng: random.Random, digits: int) -> Problem:
        lo, hi = 10 ** (digits - 1), 10**digits - 1
        return Problem(rng.randint(lo, hi), rng.randint(lo, hi), self.cot)

    @property
    def max_new_tokens(self) -> int:
        return len(Problem(10**self.digits_ood - 1, 10**self.digits_ood - 1, self.cot).solution) + 2

    def wrong_completion(self, problem: Problem, rng: random.Random) -> str:
        """The solution with a plausible wrong sum in place of the right one."""
        return "".join(problem.steps[:-1]) + wrong_answer(problem, rng) if self.cot else wrong_answer(problem, rng)

    def alphabet(self) -> set[str]:
        return set("0123456789+=\n")

    @cached_property
    def eval_sets(self) -> dict[str, list[Problem]]:
        rng = random.Random(self.eval_seed)
        out = {}
        for split, d in (("in_distribution", self.digits_id), ("out_of_distribution", self.digits_ood)):
            seen: set[Problem] = set()
            while len(seen) < self.eval_size:
                seen.add(self._draw(rng, d))
            out[split] = sorted(seen, key=lambda p: (p.a, p.b))
        return out

    @cached_property
    def held_out(self) -> frozenset[Problem]:
        """The ID evaluation problems, which training never draws (built once, not per batch)."""
        return frozenset(self.eval_sets["in_distribution"])

    def problems(self, n: int, rng: random.Random) -> list[Problem]:
        """n training problems (ID), excluding the held-out ID evaluation set."""
        out: list[Problem] = []
        while len(out) < n:
            p = self._draw(rng, self.digits_id)
            if p not in self.held_out:
                out.append(p)
        return out

    reward = staticmethod(reward)


TASKS = {"addition": Addition}


def exact_match(model, tok, problems: list[Problem], batch_size: int = 256,
                max_new_tokens: int | None = None) -> float:
    """Greedy-decoding exact match (fraction in [0, 1])."""
    from reference_impls.core.sampling import sample

    max_new = max_new_tokens or max(len(p.answer) for p in problems) + 2
    hits = 0.0
    for i in range(0, len(problems), batch_size):
        chunk = problems[i : i + batch_size]
        ro = sample(model, tok, [p.prompt for p in chunk], max_new, greedy=True)
        hits += sum(reward(p, c) for p, c in zip(chunk, ro.completions, strict=True))
    return hits / len(problems)


def mean_reward(model, tok, problems: list[Problem], samples: int = 4, temperature: float = 1.0,
                max_new_tokens: int | None = None) -> float:
    """Mean exact-match reward of `samples` sampled completions per problem (uses the torch RNG)."""
    from reference_impls.core.sampling import sample

    max_new = max_new_tokens or max(len(p.answer) for p in problems) + 2
    group = [p for p in problems for _ in range(samples)]
    ro = sample(model, tok, [p.prompt for p in group], max_new, temperature)
    return sum(reward(p, c) for p, c in zip(group, ro.completions, strict=True)) / len(group)
