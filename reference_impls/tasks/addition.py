"""Multi-digit addition: prompt "12+34=", completion "46" (+ EOS, added by the batching code).

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


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def prompt(self) -> str:
        return f"{self.a}+{self.b}="

    @property
    def answer(self) -> str:
        return str(self.a + self.b)


def reward(problem: Problem, completion: str) -> float:
    """Exact match: 1.0 if the completion (EOS stripped) is the sum, else 0.0."""
    return float(completion.strip() == problem.answer)


def wrong_answer(problem: Problem, rng: random.Random) -> str:
    """A plausible wrong sum: off by +-1, +-10, +-100 or a small random amount."""
    s = problem.a + problem.b
    delta = rng.choice([1, -1, 10, -10, 100, -100, rng.randint(2, 9), -rng.randint(2, 9)])
    w = s + delta
    return str(w if w >= 0 and w != s else s + 1)


@dataclass
class Addition:
    name: str = "addition"
    digits_id: int = 2
    digits_ood: int = 3
    eval_size: int = 200
    eval_seed: int = 12345

    def _draw(self, rng: random.Random, digits: int) -> Problem:
        lo, hi = 10 ** (digits - 1), 10**digits - 1
        return Problem(rng.randint(lo, hi), rng.randint(lo, hi))

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

    @property
    def max_answer_len(self) -> int:
        return self.digits_ood + 1

    def problems(self, n: int, rng: random.Random) -> list[Problem]:
        """n training problems (ID), excluding the held-out ID evaluation set."""
        out: list[Problem] = []
        while len(out) < n:
            p = self._draw(rng, self.digits_id)
            if p not in self.held_out:
                out.append(p)
        return out

    def demonstrations(self, n: int, rng: random.Random) -> list[tuple[str, str]]:
        return [(p.prompt, p.answer) for p in self.problems(n, rng)]

    def preference_pairs(self, n: int, rng: random.Random) -> list[tuple[str, str, str]]:
        """(prompt, chosen = correct, rejected = wrong)."""
        return [(p.prompt, p.answer, wrong_answer(p, rng)) for p in self.problems(n, rng)]

    def unpaired(self, n: int, rng: random.Random) -> list[tuple[str, str, bool]]:
        """KTO-style singletons: half correct (desirable), half wrong (undesirable)."""
        out = []
        for p in self.problems(n, rng):
            good = rng.random() < 0.5
            out.append((p.prompt, p.answer if good else wrong_answer(p, rng), good))
        return out

    def prompts(self, n: int, rng: random.Random) -> list[Problem]:
        """Problems for RL; score completions with `reward(problem, completion)`."""
        return self.problems(n, rng)

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
