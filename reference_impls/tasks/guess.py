"""Number guessing, a small multi-turn game (for multi-turn RL such as ArCHer).

The environment hides a number n in [lo, hi]. The dialogue opens with the range, "0-9\\n"; each turn
the policy writes a guess (an utterance, e.g. "4"), and the environment appends the guess and its
feedback as one line: "4 higher\\n" (n is higher), "4 lower\\n", "4 correct\\n" or "x invalid\\n"
(not a number). The episode ends on "correct" or after `turns` guesses. Reward per turn:
+1 on the correct guess, minus `turn_penalty` on every turn (0 by default).

    dialogue  "0-9\\n4 higher\\n7 lower\\n"  ->  the policy's next utterance, e.g. "6"

Multi-turn interface (signal "multi_turn"), beside the Task interface of tasks/base.py:
    start(problem) -> str                                the opening dialogue (= problem.prompt)
    turn(problem, dialogue, utterance) -> (dialogue', reward, done)
    reward(problem, utterance)   1.0 if the utterance is the hidden number: the single-turn reward
                                 (greedy `accuracy` = the first guess is right) and, on an episode's
                                 last utterance, its success
Every problem's `solution` is the expert's (binary search) first guess; `expert_guess` gives the
binary-search guess of any dialogue. Splits: in-distribution = every number of [lo, hi] = 0-9 with
4 turns (the game is so small that training sees the same numbers: the held-out axis is OOD);
out-of-distribution = `eval_size` numbers of [lo_ood, hi_ood] = 10-99 with 7 turns.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from reference_impls.tasks.base import Problem, Task

FEEDBACK = ("higher", "lower", "correct", "invalid")


@dataclass
class Guess(Task):
    """Options (`--task-option k=v`): lo, hi, turns (ID game), lo_ood, hi_ood, turns_ood, turn_penalty,
    eval_size, eval_seed."""

    name: str = "guess"
    lo: int = 0
    hi: int = 9
    turns: int = 4
    lo_ood: int = 10
    hi_ood: int = 99
    turns_ood: int = 7
    turn_penalty: float = 0.0
    eval_size: int = 50
    eval_seed: int = 12345

    provides = frozenset({"verifiable_reward", "demonstrations", "multi_turn"})

    def game(self, n: int, lo: int, hi: int, turns: int) -> Problem:
        return Problem(prompt=f"{lo}-{hi}\n", solution=str((lo + hi) // 2), answer=str(n),
                       meta=(lo, hi, turns))

    @property
    def max_new_tokens(self) -> int:
        return len(str(max(self.hi, self.hi_ood))) + 1  # a guess + EOS

    def alphabet(self) -> set[str]:
        return set("0123456789-\n ") | set("".join(FEEDBACK))

    def problems(self, n: int, rng: random.Random) -> list[Problem]:
        return [self.game(rng.randint(self.lo, self.hi), self.lo, self.hi, self.turns) for _ in range(n)]

    @cached_property
    def eval_sets(self) -> dict[str, list[Problem]]:
        rng, out = random.Random(self.eval_seed), {}
        for split, lo, hi, t in (("in_distribution", self.lo, self.hi, self.turns),
                                 ("out_of_distribution", self.lo_ood, self.hi_ood, self.turns_ood)):
            nums = range(lo, hi + 1)
            nums = nums if len(nums) <= self.eval_size else sorted(rng.sample(nums, self.eval_size))
            out[split] = [self.game(n, lo, hi, t) for n in nums]
        return out

    def reward(self, problem: Problem, completion: str) -> float:
        return float(completion.strip() == problem.answer)

    def wrong_completion(self, problem: Problem, rng: random.Random) -> str:
        lo, hi, _ = problem.meta
        return str(rng.choice([n for n in range(lo, hi + 1) if str(n) != problem.answer] or [hi + 1]))

    # --- multi-turn ----------------------------------------------------------------------------
    def start(self, problem: Problem) -> str:
        return problem.prompt

    def turn(self, problem: Problem, dialogue: str, utterance: str) -> tuple[str, float, bool]:
        """The environment's step: append the guess and its feedback -> (dialogue', reward, done)."""
        g = " ".join(utterance.split())[:8]  # one line, whatever the policy wrote
        n, (_, _, turns) = int(problem.answer), problem.meta
        taken = dialogue.count("\n")  # the opening line + one line per earlier guess
        if g == problem.answer:
            fb = "correct"
        elif g.isdigit():
            fb = "higher" if int(g) < n else "lower"
        else:
            fb = "invalid"
        reward = float(fb == "correct") - self.turn_penalty
        return f"{dialogue}{g} {fb}\n", reward, fb == "correct" or taken >= turns

    def expert_guess(self, problem: Problem, dialogue: str) -> str:
        """Binary search: the midpoint of the range the feedback so far leaves open."""
        lo, hi, _ = problem.meta
        for line in dialogue.split("\n")[1:]:
            g, _, fb = line.partition(" ")
            if g.isdigit() and fb == "higher":
                lo = max(lo, int(g) + 1)
            elif g.isdigit() and fb == "lower":
                hi = min(hi, int(g) - 1)
        return str((lo + hi) // 2)
