"""Read YAML data files into validated models, collecting *every* problem with file, line, entry, field.

Loaders never raise on bad data halfway: they return what validated plus a list of `Problem`s, and
the public `load` functions raise one `DataError` holding all of them, so nothing is half-loaded.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None  # 1-based
    entry: str | None  # the entry's id (or its position)
    field: str | None  # dotted path inside the entry
    message: str  # what was expected, and what was found

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        what = " ".join(x for x in (f"[{self.entry}]" if self.entry else "", self.field or "") if x)
        return f"{where}: {what + ': ' if what else ''}{self.message}"


class DataError(Exception):
    """Raised with every problem found, never with the first one only."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the data:\n" + "\n".join(map(str, problems)))


def suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


# ---------------------------------------------------------------------------- YAML with line numbers


def _node_at(node: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """Follow a pydantic error location down a composed YAML node tree; the deepest node found."""
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if getattr(k, "value", None) == key]
            if not match:
                # the key itself (e.g. an unknown field) is where the error is
                keys = [k for k, _ in node.value if getattr(k, "value", None) == key]
                return keys[0] if keys else node
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return node
    return node


def _describe(err: dict[str, Any]) -> str:
    kind, inp = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown field (not in the schema)"
    if kind == "missing":
        return "required field is missing"
    found = repr(inp) if not isinstance(inp, dict | list) else type(inp).__name__
    if len(found) > 80:
        found = found[:77] + "..."
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "string_type" and isinstance(inp, float):
        msg += " (quote arXiv ids in YAML: arxiv: \"2402.03300\", else they read as numbers)"
    return f"{msg}; found {found}"


def read_entries(
    path: Path, key: str, model: type[M], root: Path | None = None
) -> tuple[list[tuple[M, int | None]], list[Problem]]:
    """Validate every entry of the list under `key` in a YAML file.

    Returns (model, line) for each valid entry, and a Problem for each invalid one (all of them).
    """
    name = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        return [], [Problem(name, mark.line + 1 if mark else None, None, None, f"YAML syntax error: {problem}")]
    except (OSError, UnicodeDecodeError) as e:
        return [], [Problem(name, None, None, None, f"cannot read file: {e}")]

    if data is None:
        return [], []
    if not isinstance(data, dict) or key not in data:
        return [], [Problem(name, 1, None, None, f"expected a mapping with a top-level '{key}:' list")]
    if set(data) - {key}:
        extra = ", ".join(sorted(map(str, set(data) - {key})))
        return [], [Problem(name, 1, None, None, f"unknown top-level key(s): {extra}; expected only '{key}'")]
    items = data[key] or []
    nodes = _node_at(tree, (key,))
    if not isinstance(items, list):
        return [], [Problem(name, 1, None, key, f"expected a list, found {type(items).__name__}")]

    good: list[tuple[M, int | None]] = []
    problems: list[Problem] = []
    for i, item in enumerate(items):
        node = _node_at(nodes, (i,))
        line = node.start_mark.line + 1 if node is not None else None
        entry = str(item.get("id") or f"#{i + 1}") if isinstance(item, dict) else f"#{i + 1}"
        if not isinstance(item, dict):
            problems.append(Problem(name, line, entry, None, f"expected a mapping, found {type(item).__name__}"))
            continue
        try:
            good.append((model.model_validate(item), line))
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(err["loc"])
                at = _node_at(node, loc)
                problems.append(
                    Problem(
                        name,
                        at.start_mark.line + 1 if at is not None else line,
                        entry,
                        ".".join(map(str, loc)) or None,
                        _describe(err),
                    )
                )
    return good, problems
