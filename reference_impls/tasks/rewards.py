"""Rewards for any task (`--reward`), each `f(problem, completion) -> float`:

    exact            normalised string match with the reference answer (case, surrounding and
                     repeated whitespace, a trailing period ignored)
    math             `math-verify` (the checker open-r1 and TRL use): parse the reference and the
                     completion's final answer, compare mathematically (1.0 / 0.0)
    module:function  your Python function `(prompt, completion, **columns) -> float`, columns = the
                     row's other fields (as TRL passes extra dataset columns to reward functions)
    model:PATH       a learned reward model (`sftrl run rm` writes one): its scalar score
A reward that raises or returns a non-number stops the run with RewardError naming the row.
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

from reference_impls.tasks.base import Problem


class RewardError(RuntimeError):
    """A reward function failed on one row: the run stops and says which and why."""


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).removesuffix(".").strip()


def exact(problem: Problem, completion: str) -> float:
    return float(normalise(completion) == normalise(problem.answer or problem.solution or ""))


def math_reward(problem: Problem, completion: str) -> float:
    try:
        from math_verify import parse, verify
    except ImportError:
        raise RewardError("--reward math needs math-verify: pip install 'sftrl[tasks]'") from None
    ref = problem.answer or problem.solution or ""
    gold = parse(ref if "$" in ref or "\\boxed" in ref else f"${ref}$")
    return float(bool(gold) and verify(gold, parse(completion)))


def _row(problem: Problem) -> str:
    where = (problem.meta or {}).get("_where") if isinstance(problem.meta, dict) else None
    return where or f"prompt {problem.prompt[:60]!r}"


def user_function(spec: str) -> Callable[[Problem, str], float]:
    mod_name, _, fn_name = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # a reward module beside the user's data
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--reward {spec}: cannot import {fn_name!r} from module {mod_name!r} ({e})") from None

    def reward(problem: Problem, completion: str) -> float:
        cols = {k: v for k, v in (problem.meta or {}).items() if not k.startswith("_")} \
            if isinstance(problem.meta, dict) else {}
        cols = {k: v for k, v in cols.items() if k not in ("prompt", "completion")}
        try:
            value = fn(problem.prompt, completion, **cols)
        except Exception as e:
            raise RewardError(f"reward {spec} raised on {_row(problem)}: {type(e).__name__}: {e}") from e
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RewardError(f"reward {spec} returned {value!r} on {_row(problem)}; expected a finite number")
        return float(value)

    return reward


def make_reward(spec: str, task=None) -> Callable[[Problem, str], float]:
    if spec == "exact":
        return exact
    if spec == "math":
        return math_reward
    if spec.startswith("model:"):
        from reference_impls.core.reward_model import reward_fn

        return reward_fn(spec[6:])
    if ":" in spec:
        return user_function(spec)
    raise ValueError(f"unknown reward {spec!r}; use exact, math, module:function or model:PATH")
