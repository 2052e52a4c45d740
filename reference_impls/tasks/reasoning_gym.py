"""reasoning-gym tasks (`--task rg:<generator>`): procedural generators with their own scorers,
offline (the PyPI package `reasoning-gym`; `pip install 'sftrl[tasks]'`).

    --task rg:countdown --task-option min_numbers=3 --task-option ood_min_numbers=5

- Every option that is a field of the generator's config (e.g. countdown's `min_numbers`,
  `max_target`) sets the training / in-distribution config.
- `ood_<field>=v` sets that field for the out-of-distribution split. Where none is given, the
  split uses the difficulty knob of `OOD` below (more operands, more people, more digits); a
  generator not listed there gets an OOD split that is only a held-out seed (said in the run's
  results as `ood: held-out seed`).
- `eval_size` (default 50) problems per split; `seed` (default 0) of the training stream.
The generator's `score_answer(completion, entry)` is the reward (in [0, 1]). The expert solution
is the generator's reference answer; its steps are its words (no generator gives worked steps).
"""

from __future__ import annotations

import dataclasses
import random
import re
from functools import cached_property, lru_cache
from typing import Any

from reference_impls.tasks.base import Problem, Task

# The difficulty knob of the OOD split, per generator (ID = the generator's defaults unless set).
ID = {"countdown": {"min_numbers": 3, "max_numbers": 4, "max_target": 200},
      "basic_arithmetic": {"min_terms": 2, "max_terms": 3, "max_digits": 2},
      "knights_knaves": {"n_people": 2}, "chain_sum": {"min_terms": 2, "max_terms": 3}}
OOD = {"countdown": {"min_numbers": 5, "max_numbers": 6, "max_target": 999},
       "basic_arithmetic": {"min_terms": 5, "max_terms": 6, "max_digits": 3},
       "knights_knaves": {"n_people": 4}, "chain_sum": {"min_terms": 5, "max_terms": 6}}
POOL = 1_000_000  # indices of the procedural training stream
EVAL_SEED = 987_654_321


def _import():
    try:
        import reasoning_gym
    except ImportError:
        raise ImportError("reasoning-gym tasks need the package: pip install 'sftrl[tasks]' "
                          "(or pip install reasoning-gym)") from None
    return reasoning_gym


class ReasoningGymTask(Task):
    warm_pool = 256  # the warm start imitates this many problems (some generators take ~0.1 s each)
    provides = frozenset({"demonstrations", "preference_pairs", "unpaired_labels",
                          "verifiable_reward", "expert_solutions", "solution_steps"})

    def __init__(self, generator: str, config: dict[str, Any], ood: dict[str, Any],
                 eval_size: int = 50, seed: int = 0):
        rg = _import()
        self.name, self.generator, self.eval_size = f"rg:{generator}", generator, eval_size
        self.config, self.ood_config, self.ood_is_seed_only = config, ood, not ood
        self.train_ds = rg.create_dataset(generator, seed=seed, size=POOL, **config)
        self.id_eval_ds = rg.create_dataset(generator, seed=EVAL_SEED, size=20 * eval_size, **config)
        self.ood_eval_ds = rg.create_dataset(generator, seed=EVAL_SEED + 1, size=20 * eval_size,
                                             **{**config, **ood})
        self._item = lru_cache(maxsize=65536)(self._generate)

    @classmethod
    def create(cls, generator: str, options: dict[str, Any]) -> ReasoningGymTask:
        rg = _import()
        from reasoning_gym.factory import DATASETS

        if generator not in DATASETS:
            from taxonomy.loading import suggest

            raise KeyError(f"unknown reasoning-gym generator {generator!r}{suggest(generator, DATASETS)}; "
                           f"{len(DATASETS)} known, e.g. {', '.join(sorted(DATASETS)[:8])}, …")
        fields = {f.name for f in dataclasses.fields(rg.create_dataset(generator, seed=0, size=1).config)}
        fields -= {"seed", "size"}
        opts = dict(options)
        eval_size, seed = int(opts.pop("eval_size", 50)), int(opts.pop("seed", 0))
        ood = {k[4:]: opts.pop(k) for k in list(opts) if k.startswith("ood_")}
        if bad := sorted((set(opts) | set(ood)) - fields):
            raise ValueError(f"rg:{generator} has no option(s) {bad}; its options: "
                             f"{', '.join(sorted(fields))}, ood_<option>, eval_size, seed")
        config = {**ID.get(generator, {}), **opts}
        return cls(generator, config, ood or dict(OOD.get(generator, {})), eval_size, seed)

    def _generate(self, which: str, idx: int) -> Problem | None:
        """Item `idx` of a split, or None where the generator fails for that seed (countdown and
        maze give up on some: "Failed to generate valid expression after 100 attempts")."""
        ds = {"train": self.train_ds, "id": self.id_eval_ds, "ood": self.ood_eval_ds}[which]
        try:
            e = ds[idx]
        except Exception:  # noqa: BLE001 - a generator's own failure for this seed: skip the item
            return None
        answer = str(e["answer"])
        steps = tuple(re.findall(r"\S+\s*", answer)) or (answer,)
        return Problem(prompt=e["question"], solution=answer, answer=answer, steps=steps, meta=e)

    @cached_property
    def eval_sets(self) -> dict[str, list[Problem]]:
        return {"in_distribution": self._split("id"), "out_of_distribution": self._split("ood")}

    def _split(self, which: str) -> list[Problem]:
        """The first `eval_size` items the generator can make (seeds it fails for are skipped)."""
        out = [p for i in range(self.eval_size) if (p := self._item(which, i)) is not None]
        i = self.eval_size
        while len(out) < self.eval_size and i < 20 * self.eval_size:
            if (p := self._item(which, i)) is not None:
                out.append(p)
            i += 1
        if not out:
            raise ValueError(f"{self.name}: the generator failed for every seed of the {which} split; "
                             "try other options (--task-option)")
        return out

    @cached_property
    def _held_out(self) -> frozenset[str]:
        return frozenset(p.prompt for p in self.eval_sets["in_distribution"])

    def problems(self, n: int, rng: random.Random) -> list[Problem]:
        out: list[Problem] = []
        tries = 0
        while len(out) < n:
            p = self._item("train", rng.randrange(POOL))
            tries += 1
            if p is not None and p.prompt not in self._held_out:
                out.append(p)
            elif tries > 20 * n + 100:
                raise ValueError(f"{self.name}: the generator failed for {tries - len(out)} of {tries} "
                                 "seeds; try other options (--task-option)")
        return out

    def reward(self, problem: Problem, completion: str) -> float:
        return float(self.train_ds.score_answer(completion.strip(), problem.meta))

    def wrong_completion(self, problem: Problem, rng: random.Random) -> str:
        """Another problem's reference answer that this problem's scorer rejects."""
        for _ in range(20):
            other = self._item("train", rng.randrange(POOL))
            if other is not None and self.reward(problem, other.solution) < 1.0:
                return other.solution
        return problem.solution[::-1] + " x"

    @property
    def max_new_tokens(self) -> int:
        sample = self.problems(30, random.Random(0)) + self.eval_sets["out_of_distribution"][:10]
        return max(len(p.solution) for p in sample) + 8

    def checked_problems(self) -> list[Problem]:  # some generators take ~0.1 s a problem: a small sample
        return self.problems(16, random.Random(0)) + [q for s in self.eval_sets.values() for q in s]

    def alphabet(self) -> set[str]:
        chars: set[str] = set()
        for p in self.problems(30, random.Random(0)) + [q for s in self.eval_sets.values() for q in s]:
            chars.update(p.prompt + p.solution)
        return chars
