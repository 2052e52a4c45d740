"""The method registry: `data/methods.yaml` + `data/relations.yaml`, validated together."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from taxonomy.loading import DataError, Problem, read_entries, suggest

if TYPE_CHECKING:  # the schema (pydantic) is imported when data is read, not by `sftrl --help`
    from taxonomy.schema import Method, Relation

DATA_ENV = "SFTRL_DATA"


def default_data_dir() -> Path:
    """`$SFTRL_DATA` if set, else the `data/` directory that ships with the project."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


@dataclass
class Registry:
    methods: dict[str, Method]
    relations: list[Relation]
    lines: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # id -> (file, line)

    def __getitem__(self, method_id: str) -> Method:
        try:
            return self.methods[method_id]
        except KeyError:
            hint = suggest(method_id, self.methods) or f" (not one of the {len(self.methods)} methods: sftrl methods list)"
            raise KeyError(f"unknown method {method_id!r}{hint}") from None

    def __contains__(self, method_id: object) -> bool:
        return method_id in self.methods


def check_registry(data_dir: Path) -> tuple[Registry, list[Problem]]:
    """Load and cross-check methods and relations; return what loaded and every problem."""
    from taxonomy.schema import Method, Relation

    problems: list[Problem] = []
    mpath, rpath = data_dir / "methods.yaml", data_dir / "relations.yaml"
    methods: dict[str, Method] = {}
    lines: dict[str, tuple[str, int | None]] = {}
    if not mpath.exists() and not mpath.is_symlink():
        problems.append(Problem(str(mpath), None, None, None, "file not found (the method registry is required)"))
    else:
        got, probs = read_entries(mpath, "methods", Method, root=data_dir)
        problems += probs
        if not got and not probs:
            problems.append(Problem("methods.yaml", 1, None, "methods",
                                    "the method registry is empty; every study's pipeline names its methods here"))
        for m, line in got:
            if m.id in methods:
                first = lines[m.id][1]
                problems.append(Problem("methods.yaml", line, m.id, "id", f"duplicate id (first at line {first})"))
                continue
            methods[m.id] = m
            lines[m.id] = ("methods.yaml", line)
        for m, line in got:
            for c in m.components:
                if c not in methods and c not in {x.id for x, _ in got}:
                    problems.append(
                        Problem("methods.yaml", line, m.id, "components", f"unknown method {c!r}{suggest(c, methods)}")
                    )

    for name in ("methods", "relations"):
        for wrong in (f"{name}.yml", f"{name}.YAML", f"{name}.Yaml"):
            if (data_dir / wrong).exists() and not _same(data_dir / wrong, data_dir / f"{name}.yaml"):
                problems.append(Problem(wrong, None, None, None, f"this file is not read; rename it to {name}.yaml"))
    relations: list[Relation] = []
    if rpath.exists() or rpath.is_symlink():
        got_r, probs = read_entries(rpath, "relations", Relation, root=data_dir)
        problems += probs
        seen: set[tuple[str, str, str]] = set()
        for r, line in got_r:
            entry = f"{r.source}->{r.target}"
            bad = False
            for end in ("source", "target"):
                mid = getattr(r, end)
                if methods and mid not in methods:
                    problems.append(
                        Problem("relations.yaml", line, entry, end, f"unknown method {mid!r}{suggest(mid, methods)}")
                    )
                    bad = True
            if (r.source, r.target, r.kind) in seen:
                problems.append(Problem("relations.yaml", line, entry, "kind", f"duplicate relation ({r.kind})"))
                bad = True
            seen.add((r.source, r.target, r.kind))
            if not bad:
                relations.append(r)

    registry = Registry(methods, relations, lines)
    if not problems:
        from taxonomy.graph import derivation_cycles  # local: graph imports registry

        for cycle in derivation_cycles(registry):
            problems.append(
                Problem("relations.yaml", None, " -> ".join(cycle), None, "derivation edges form a cycle")
            )
    return registry, problems


def _same(a: Path, b: Path) -> bool:
    """Whether two names are one file (as on a case-insensitive file system)."""
    try:
        return a.samefile(b)
    except OSError:
        return False


def load_registry(data_dir: Path | None = None) -> Registry:
    registry, problems = check_registry(data_dir or default_data_dir())
    if problems:
        raise DataError(problems)
    return registry
