"""Rewards for any task (`--reward`), each `f(problem, completion) -> float`:

    exact            normalised string match with the reference answer (case, surrounding and
                     repeated whitespace, a trailing period ignored)
    math             `math-verify` (the checker open-r1 and TRL use): parse the reference and the
                     completion's final answer, compare mathematically (1.0 / 0.0)
    module:function  your Python function `(prompt, completion, **columns) -> float`, columns = the
                     row's other fields (as TRL passes extra dataset columns to reward functions)
    model:PATH       a learned reward model (`sftrl run rm` writes one): its scalar score
A reward that raises or returns a non-number stops the run with RewardError naming the row. A user
function gets REWARD_TIMEOUT_S seconds per call ($SFTRL_REWARD_TIMEOUT; code-execution rewards hang in
practice), then the run stops with RewardError naming the row.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from reference_impls.tasks.base import Problem


class RewardError(RuntimeError):
    """A reward function failed on one row: the run stops and says which and why."""


def timeout_s() -> float:
    return float(os.environ.get("SFTRL_REWARD_TIMEOUT", "30"))


@contextmanager
def time_limit(seconds: float, what: str):
    """Raise RewardError if the body runs longer than `seconds` (SIGALRM: main thread, Unix only;
    elsewhere the body runs unbounded)."""
    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise RewardError(f"{what}: no answer within {seconds:g} s (set SFTRL_REWARD_TIMEOUT to allow more)")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def as_number(value) -> float | None:
    """A finite float from an int, float, NumPy scalar or one-element tensor/array; else None."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, numbers.Real) and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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
        module = importlib.import_module(mod_name)
    except SyntaxError as e:
        raise ValueError(f"--reward {spec}: module {mod_name!r} has a syntax error ({e.filename}, line "
                         f"{e.lineno}: {e.msg})") from None
    except Exception as e:  # noqa: BLE001 - whatever the user's module raises while importing
        raise ValueError(f"--reward {spec}: cannot import module {mod_name!r} "
                         f"({type(e).__name__}: {e})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ValueError(f"--reward {spec}: module {mod_name!r} ({getattr(module, '__file__', '?')}) has no "
                         f"function {fn_name!r}")

    def reward(problem: Problem, completion: str) -> float:
        cols = {k: v for k, v in (problem.meta or {}).items() if not k.startswith("_")} \
            if isinstance(problem.meta, dict) else {}
        cols = {k: v for k, v in cols.items() if k not in ("prompt", "completion")}
        try:
            with time_limit(timeout_s(), f"reward {spec} on {_row(problem)}"):
                value = fn(problem.prompt, completion, **cols)
        except RewardError:
            raise
        except Exception as e:
            raise RewardError(f"reward {spec} raised on {_row(problem)}: {type(e).__name__}: {e}") from e
        number = as_number(value)
        if number is None:
            raise RewardError(f"reward {spec} returned {value!r} on {_row(problem)}; expected a finite number")
        return number

    return reward


def make_reward(spec: str, task=None) -> Callable[[Problem, str], float]:
    if spec == "exact":
        return exact
    if spec == "math":
        return math_reward
    if spec.startswith("model:"):
        from reference_impls.core.reward_model import reward_fn

        where = spec[6:]
        if not Path(where).exists() and (where.startswith((".", "/", "~")) or where.count("/") != 1):
            raise ValueError(f"--reward {spec}: no such folder {where!r} (a reward model folder written by "
                             "`sftrl run rm`, or a Hugging Face id org/name)")

        return reward_fn(spec[6:])
    if ":" in spec:
        return user_function(spec)
    raise ValueError(f"unknown reward {spec!r}; use exact, math, module:function or model:PATH")
