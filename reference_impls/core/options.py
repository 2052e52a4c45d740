"""A method's options, read from its `Config` dataclass: name, type, default and the one-line
meaning written as the trailing comment of the field's line (`lr: float = 3e-4  # step size`).
No registration: the comment a reader sees in the source is the help `sftrl run --help` prints."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

import yaml


@dataclasses.dataclass
class Option:
    name: str
    type: str
    default: Any
    help: str


def _comments(cls: type) -> dict[str, str]:
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # subclasses override their bases' comments
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for m in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", src, re.M):
            out[m.group(1)] = m.group(2).strip()
    return out


def options(cfg_cls: type) -> list[Option]:
    """Every field of a Config dataclass, in declaration order, with its help line."""
    helps, hints = _comments(cfg_cls), typing.get_type_hints(cfg_cls)
    out = []
    for f in dataclasses.fields(cfg_cls):
        t = hints.get(f.name, f.type)
        if typing.get_origin(t) is typing.Literal:
            tname = "|".join(map(str, typing.get_args(t)))
        else:
            tname = str(t).replace("typing.", "") if typing.get_args(t) else getattr(t, "__name__", str(t))
        out.append(Option(f.name, tname, f.default, helps.get(f.name, "")))
    return out


def parse_value(text: str) -> Any:
    """A command-line value as YAML reads it: 1e-4 -> float, true -> bool, [1, 2] -> list."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", v):
        return float(v)  # YAML 1.1 reads 1e-4 as a string
    return v


def coerce(cfg_cls: type, name: str, value: Any) -> Any:
    """Check/convert `value` for field `name` (ints where ints are declared, tuples for tuples)."""
    t = typing.get_type_hints(cfg_cls)[name]
    origin = typing.get_origin(t)
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if value is None:
        if type(None) in typing.get_args(t):
            return None
        raise ValueError(f"option {name!r} cannot be empty")
    if t is bool or (origin in (typing.Union, getattr(__import__("types"), "UnionType", None))
                     and args == [bool]):
        if isinstance(value, bool):
            return value
        raise ValueError(f"option {name!r} expects true or false, got {value!r}")
    base = args[0] if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1 else t
    if base is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"option {name!r} expects an integer, got {value!r}")
        return int(value)
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"option {name!r} expects a number, got {value!r}")
        return float(value)
    if typing.get_origin(base) is typing.Literal:
        if value not in typing.get_args(base):
            raise ValueError(f"option {name!r} expects one of {list(typing.get_args(base))}, got {value!r}")
        return value
    if typing.get_origin(base) is tuple and isinstance(value, list | tuple):
        return tuple(value)
    return value
