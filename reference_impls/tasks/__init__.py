"""Tasks by name: `make_task("addition")`, `make_task("rg:countdown", {"min_numbers": 3})`,
`make_task(data="train.jsonl", reward="math")`. Unknown names raise UnknownTask listing the known."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from reference_impls.tasks.base import MissingSignal, Problem, Task

__all__ = ["MissingSignal", "Problem", "Task", "UnknownTask", "make_task", "task_key", "KNOWN"]

KNOWN = ("addition", "ladder (chains of additions: difficulty ladder, sliver of OOD levels)", "shortcut (a cue that gives the answer away in training, not OOD)", "guess (multi-turn number guessing)", "rg:<generator> (reasoning-gym, e.g. rg:countdown, rg:basic_arithmetic)",
         "--data PATH (your own JSONL/JSON/CSV/Parquet/saved HF dataset)")


# Tasks built for the findings (sftrl findings): name -> "module.Class" (a dataclass Task).
NEW_TASKS = {"ladder": "reference_impls.tasks.ladder.Ladder", "shortcut": "reference_impls.tasks.shortcut.Shortcut"}


class UnknownTask(ValueError):
    pass


def _dataclass_task(cls, options: dict[str, Any], name: str):
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if bad := sorted(set(options) - set(fields) - {"name"}):
        raise UnknownTask(f"task {name!r} has no option(s) {bad}; its options: "
                          f"{', '.join(f'{k}={f.default!r}' for k, f in fields.items() if k != 'name')}")
    return cls(**options)


def make_task(name: str | None = "addition", options: dict[str, Any] | None = None, *,
              data: str | Path | None = None, eval_data: str | Path | None = None,
              reward: str | None = None) -> Task:
    options = dict(options or {})
    if data is not None:
        from reference_impls.tasks.dataset import DatasetTask

        return DatasetTask.load(data, eval_data=eval_data, reward=reward or "exact", **options)
    if name == "addition":
        from reference_impls.tasks.addition import Addition

        task = _dataclass_task(Addition, options, name)
    elif name in NEW_TASKS:
        import importlib

        mod, cls = NEW_TASKS[name].rsplit(".", 1)
        task = _dataclass_task(getattr(importlib.import_module(mod), cls), options, name)
    elif name == "guess":
        from reference_impls.tasks.guess import Guess

        task = _dataclass_task(Guess, options, name)
    elif name and name.startswith("rg:"):
        from reference_impls.tasks.reasoning_gym import ReasoningGymTask

        try:
            task = ReasoningGymTask.create(name[3:], options)
        except KeyError as e:
            raise UnknownTask(e.args[0]) from None
    else:
        raise UnknownTask(f"unknown task {name!r}; known tasks: {'; '.join(KNOWN)}")
    if reward is not None:
        from reference_impls.tasks.rewards import make_reward

        if reward.startswith("model:"):  # a learned reward: keep the task's scorer for evaluation
            task.eval_reward = task.reward
        task.reward = make_reward(reward, task)
    return task


def task_key(name: str | None, options: dict | None, data: str | Path | None = None,
             reward: str | None = None) -> str:
    """A short stable id of a task (cache keys of warm-start bases)."""
    spec: dict[str, Any] = {"name": name, "options": options or {}, "reward": reward}
    if data is not None:
        p = Path(data)
        digest = hashlib.sha256()
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                digest.update(f.read_bytes())
        spec["data"] = digest.hexdigest()[:16]
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
