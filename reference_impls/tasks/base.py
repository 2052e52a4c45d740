"""The Task interface every method trains on, whatever the data: a pure function of (seed, step).

A task is a list of *problems* plus a reward. Every supervision signal of the taxonomy derives from
them, so one interface serves SFT, preference optimisation, RL and the SFT<->RL hybrids:

    signal              what a method gets                                  from
    demonstrations      (prompt, completion)                                problem.solution
    preference_pairs    (prompt, chosen, rejected)                          solution vs a wrong one
    unpaired_labels     (prompt, completion, is_desirable)                  KTO-style singletons
    verifiable_reward   problems; reward(problem, completion) -> float      the task's scorer
    expert_solutions    the expert completion of any prompt the policy samples (hybrids)
    solution_steps      that completion split into steps, "".join(steps) == solution
                        (Step-DPO, SRL, prefix and hint methods)
    multi_turn          an environment: start(problem), turn(problem, dialogue, utterance)
                        (ArCHer on tasks/guess.py)

A method module declares `NEEDS = {...}` (names above); the runner checks the task `provides`
them before training and otherwise stops with the method and the missing signal named.
Concrete tasks: `addition` (tasks/addition.py), reasoning-gym generators `rg:<name>`
(tasks/reasoning_gym.py) and a user's dataset `--data PATH` (tasks/dataset.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

SIGNALS = ("demonstrations", "preference_pairs", "unpaired_labels", "verifiable_reward",
           "expert_solutions", "solution_steps")  # multi_turn: only tasks that are environments


class MissingSignal(ValueError):
    """A method needs a signal that the task cannot give."""


@dataclass(frozen=True)
class Problem:
    """One prompt of a task. `solution` is the expert completion (what SFT imitates); `answer` is
    what the reward checks (often equal to the solution); `steps` split the solution, or are None."""

    prompt: str
    solution: str | None = None
    answer: str | None = None
    steps: tuple[str, ...] | None = None
    rejected: str | None = None  # a known wrong completion (a dataset's `rejected` column)
    label: bool | None = None  # for unpaired rows: is `solution` desirable?
    meta: Any = field(default=None, compare=False, hash=False)  # task-private (e.g. a scorer's entry)


class Task:
    """Base class: subclasses set `name`, implement `problems`, `reward`, `eval_sets`, and may
    override `wrong_completion`. Everything else is derived here, the same way for every task."""

    name: str = "task"
    max_new_tokens: int = 16  # a completion-length budget that fits this task's solutions
    provides: frozenset[str] = frozenset(SIGNALS)
    eval_sets: dict[str, list[Problem]]  # "in_distribution" / "out_of_distribution"
    eval_reward = None  # the scorer evaluation uses when training optimises another reward (a learned RM)

    # --- to implement ------------------------------------------------------------------------
    def problems(self, n: int, rng: random.Random) -> list[Problem]:
        """n training problems, drawn with `rng` (never the held-out evaluation problems)."""
        raise NotImplementedError

    def reward(self, problem: Problem, completion: str) -> float:
        raise NotImplementedError

    def wrong_completion(self, problem: Problem, rng: random.Random) -> str:
        """A plausible wrong completion (rejected side of a pair, undesirable singleton)."""
        if problem.rejected is not None:
            return problem.rejected
        raise MissingSignal(f"task {self.name!r} has no wrong completions (no `rejected` column)")

    # --- derived -----------------------------------------------------------------------------
    def require(self, needs: set[str] | frozenset[str], method: str) -> None:
        """Raise MissingSignal naming the method and each signal this task cannot give."""
        if missing := sorted(set(needs) - set(self.provides)):
            raise MissingSignal(
                f"method {method!r} needs {', '.join(missing)}, which task {self.name!r} cannot "
                f"give (it provides: {', '.join(sorted(self.provides))})")

    def prompts(self, n: int, rng: random.Random) -> list[Problem]:
        """Problems for RL: sample completions of `p.prompt`, score with `reward(p, completion)`;
        hybrids also read `p.solution` (and `p.steps`) of the very same problems."""
        return self.problems(n, rng)

    def demonstrations(self, n: int, rng: random.Random) -> list[tuple[str, str]]:
        return [(p.prompt, p.solution) for p in self.problems(n, rng)]

    def preference_pairs(self, n: int, rng: random.Random) -> list[tuple[str, str, str]]:
        """(prompt, chosen = the solution, rejected = a wrong completion)."""
        return [(p.prompt, p.solution, self.wrong_completion(p, rng)) for p in self.problems(n, rng)]

    def unpaired(self, n: int, rng: random.Random) -> list[tuple[str, str, bool]]:
        """KTO-style singletons: about half desirable (the solution), half undesirable."""
        out = []
        for p in self.problems(n, rng):
            if p.label is not None:  # a dataset's own labels
                out.append((p.prompt, p.solution, p.label))
                continue
            good = rng.random() < 0.5
            out.append((p.prompt, p.solution if good else self.wrong_completion(p, rng), good))
        return out

    def checked_problems(self) -> list[Problem]:
        """Problems whose lengths the runner checks against the model's context before training: a
        sample of the training stream and the evaluation sets (a dataset checks every row)."""
        return self.problems(64, random.Random(0)) + [q for s in self.eval_sets.values() for q in s]

    def alphabet(self) -> set[str]:
        """Characters of this task's texts (the tiny preset builds its vocabulary from them)."""
        rng, chars = random.Random(0), set()
        for p in self.problems(200, rng) + [q for s in self.eval_sets.values() for q in s]:
            for text in (p.prompt, p.solution, p.answer, p.rejected):
                chars.update(text or "")
        return chars
