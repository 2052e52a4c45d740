"""The catalogue: every study in `data/studies/*.yaml`, validated against the schema and the registry.

    >>> cat = Catalog.load()
    >>> cat.query(domain="math", paradigm="hybrid", year=2025)        # a pandas DataFrame
    >>> cat.query(method="grpo", include_descendants=True)            # GRPO and its offspring

One row per study in `frame()`; `stages()` and `results()` are the long tables behind it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog.export import Rows
from taxonomy.loading import DataError, Problem, gc_paused, printable, read_entries, suggest
from taxonomy.registry import Registry, check_registry, default_data_dir
from taxonomy.schema import FIGURE2_SOURCES, DataSource, Domain, Paradigm, Study, derive_paradigm

if TYPE_CHECKING:  # pandas is imported on the first table, not to validate
    import pandas as pd


def normalise_title(title: str) -> str:
    """Case, accents' composition and punctuation ignored; letters of every script kept."""
    return re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", title).casefold()).strip()


def study_files(data_dir: Path) -> tuple[list[Path], list[Problem]]:
    """The `studies/*.yaml` files, and a problem for each file there that would be ignored."""
    folder = data_dir / "studies"
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "folder not found"
        return [], [Problem("studies/", None, None, None,
                            f"{what}: the catalogue's studies live in studies/*.yaml (one or more files)")]
    files, problems = [], []
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        return [], [Problem("studies/", None, None, None, f"cannot list the folder: {e.strerror or e}")]
    for path in entries:
        name, suffix = path.name, path.suffix.lower()
        if name.startswith("."):  # editors' swap files and the like pass unsaid; a hidden YAML file does not
            if suffix in (".yml", ".yaml"):
                problems.append(Problem(f"studies/{printable(name)}", None, None, None,
                                        "this hidden file is not read; rename it without the leading dot"))
            continue
        if path.suffix == ".yaml":
            files.append(path)
        elif suffix in (".yml", ".yaml"):
            problems.append(Problem(f"studies/{printable(name)}", None, None, None,
                                    "this file is not read: only files ending in .yaml are; rename it"))
        elif path.is_dir() and not path.is_symlink():
            problems.append(Problem(f"studies/{printable(name)}/", None, None, None,
                                    "folders inside studies/ are not read; move its files up into studies/"))
    return files, problems


def check_catalog(data_dir: Path) -> tuple[Registry, list[Study], list[Problem]]:
    """Load registry and studies; return what validated and *all* problems found."""
    with gc_paused():
        return _check_catalog(data_dir)


def _check_catalog(data_dir: Path) -> tuple[Registry, list[Study], list[Problem]]:
    registry, problems = check_registry(data_dir)
    studies: list[Study] = []
    by_id: dict[str, str] = {}
    by_arxiv: dict[str, str] = {}
    by_title: dict[str, str] = {}
    files, ignored = study_files(data_dir)
    problems += ignored
    for path in files:
        name = str(path.relative_to(data_dir))
        got, probs = read_entries(path, "studies", Study, root=data_dir)
        problems += probs
        for s, line in got:
            bad = []
            for i, stage in enumerate(s.pipeline.stages):
                if registry.methods and stage.method not in registry:
                    hint = suggest(stage.method, registry.methods)
                    bad.append(Problem(name, line, s.id, f"pipeline.stages.{i}.method",
                                       f"unknown method {stage.method!r}{hint}"))
            for key, seen, label in ((s.id, by_id, "id"), (s.arxiv, by_arxiv, "arxiv"),
                                     (normalise_title(s.title), by_title, "title")):
                if key in seen:
                    bad.append(Problem(name, line, s.id, label, f"duplicate {label}: already used by {seen[key]}"))
            problems += bad
            if not bad:
                by_id[s.id] = by_arxiv[s.arxiv] = by_title[normalise_title(s.title)] = f"{name}:{s.id}"
                studies.append(s)
    return registry, studies, problems


@dataclass
class Catalog:
    registry: Registry
    studies: list[Study]
    _records: Any = field(default=None, init=False, repr=False, compare=False)  # (key, rows)
    _frame: Any = field(default=None, init=False, repr=False, compare=False)  # DataFrame of _records

    @classmethod
    def load(cls, data_dir: Path | str | None = None) -> Catalog:
        """Load everything or nothing: raises DataError listing every problem."""
        registry, studies, problems = check_catalog(Path(data_dir) if data_dir else default_data_dir())
        if problems:
            raise DataError(problems)
        return cls(registry, studies)

    # ------------------------------------------------------------------------ tables

    def paradigm(self, study: Study) -> Paradigm:
        return derive_paradigm([self.registry[m].paradigm for m in study.pipeline.method_ids()])

    def frame(self) -> pd.DataFrame:
        """One row per study; list-valued columns hold lists. Built once and kept (rebuilt if
        `studies` is replaced or changes length); a copy is returned, so callers may change it."""
        return self._built().copy()

    def records(self) -> list[dict[str, Any]]:
        """The rows of `frame()` as plain dicts (no pandas), built once and kept; do not change them."""
        key = (id(self.studies), len(self.studies))
        if self._records is None or self._records[0] != key:
            self._records = (key, [self._row(s) for s in self.studies])
            self._frame = None
        return self._records[1]

    def _built(self) -> pd.DataFrame:
        records = self.records()
        if self._frame is None:
            import pandas as pd

            self._frame = pd.DataFrame(records, columns=COLUMNS)
        return self._frame

    def _row(self, s: Study) -> dict[str, Any]:
        return {
            "id": s.id, "year": s.year, "month": s.month, "date": s.date, "title": s.title,
            "arxiv": s.arxiv, "first_author": s.first_author, "venue": s.venue,
            "domain": str(s.domains[0]), "domains": [str(d) for d in s.domains],
            "paradigm": str(self.paradigm(s)),
            "pipeline": " -> ".join(s.pipeline.method_ids()),
            "methods": s.pipeline.method_ids(),
            "data_sources": sorted({str(d.source) for st in s.pipeline.stages for d in st.data}),
            "base_models": list(s.base_models),
            "n_results": len(s.results),
            "secondary": s.secondary,
            "url": s.sources[0],
            "modality": str(s.modality),
            "pipeline_read": str(s.pipeline_read) if s.pipeline_read else None,
            # methods as adopted: stages that only approximate the paper's own algorithm left out
            "adopted_methods": [st.method for st in s.pipeline.stages if not st.approximation],
        }

    def stages(self) -> pd.DataFrame:
        """One row per (study, stage, data source); the unit for per-stage counting."""
        import pandas as pd

        rows = []
        for s in self.studies:
            for i, st in enumerate(s.pipeline.stages):
                method = self.registry[st.method]
                for d in st.data or [None]:
                    rows.append({
                        "study": s.id, "year": s.year, "domain": str(s.domains[0]), "stage": i,
                        "method": st.method, "method_paradigm": str(method.paradigm),
                        "family": str(method.family),
                        "source": str(d.source) if d else None, "data": d.name if d else None,
                        "size": d.size if d else None,
                    })
        return pd.DataFrame(rows, columns=["study", "year", "domain", "stage", "method",
                                           "method_paradigm", "family", "source", "data", "size"])

    def results(self) -> pd.DataFrame:
        """Reported results, one row each; same columns as the results of our runs."""
        import pandas as pd

        return pd.DataFrame(self.result_records(), columns=RESULT_COLUMNS)

    def result_records(self) -> list[dict[str, Any]]:
        """The rows of `results()` as plain dicts (no pandas)."""
        return [
            {"study": s.id, "year": s.year, "domain": str(s.domains[0]), "paradigm": str(self.paradigm(s)),
             **r.model_dump(mode="json")}
            for s in self.studies for r in s.results
        ]

    # ------------------------------------------------------------------------ queries

    def query(self, **filters: Any) -> pd.DataFrame:
        """Filter studies into a DataFrame (one row per study, `frame()`'s columns); the filters
        are `select`'s. The frame is built once per catalogue, so a query costs milliseconds."""
        return self._built().iloc[self._match(**filters)].reset_index(drop=True)

    def select(self, **filters: Any) -> Rows:
        """`query` without pandas: the matching rows as a `catalog.export.Rows`."""
        records = self.records()
        return Rows([records[i] for i in self._match(**filters)], COLUMNS)

    def _match(
        self,
        domain: str | Iterable[str] | None = None,
        year: int | Iterable[int] | None = None,
        paradigm: str | Iterable[str] | None = None,
        method: str | None = None,
        include_descendants: bool = False,
        source: str | None = None,
        base_model: str | None = None,
        text: str | None = None,
    ) -> list[int]:
        """Positions of the studies that pass every filter given. Strings match case-insensitively.

        domain: any of a study's domains; year: of the first arXiv version; method: a registry id
        appearing in the pipeline (with include_descendants, also any method derived from it in
        the graph); source: a data source of any stage; base_model: substring of a base model;
        text: substring of title/id/pipeline/arXiv id. An unknown domain, paradigm, source, method
        or a year with no study is a ValueError/KeyError naming the known values.
        """
        records = self.records()
        tests = []
        if domain is not None:
            want = {_enum(Domain, d) for d in _many(domain)}
            tests.append(lambda r: not want.isdisjoint(r["domains"]))
        if year is not None:
            years = {_year(y) for y in _many(year)}
            known = {r["year"] for r in records}
            if unknown := sorted(years - known):
                have = ", ".join(map(str, sorted(known))) or "none"
                raise ValueError(f"no study from {', '.join(map(str, unknown))}; the catalogue has studies "
                                 f"from {have}")
            tests.append(lambda r: r["year"] in years)
        if paradigm is not None:
            paradigms = {_enum(Paradigm, p) for p in _many(paradigm)}
            tests.append(lambda r: r["paradigm"] in paradigms)
        if method is not None:
            self.registry[method]  # raises KeyError with a suggestion
            ids = {method}
            if include_descendants:
                from taxonomy.graph import descendants, method_graph

                ids |= set(descendants(method_graph(self.registry), method))
            tests.append(lambda r: not ids.isdisjoint(r["methods"]))
        if source is not None:
            src = _enum(DataSource, source)
            tests.append(lambda r: src in r["data_sources"])
        if base_model is not None:
            bm = base_model.lower()
            tests.append(lambda r: any(bm in m.lower() for m in r["base_models"]))
        if text is not None:
            t = text.lower()
            tests.append(lambda r: t in f"{r['title'].lower()} {r['id']} {r['pipeline']} {r['arxiv']}")
        return [i for i, r in enumerate(records) if all(test(r) for test in tests)]


RESULT_COLUMNS = ["study", "year", "domain", "paradigm", "benchmark", "metric", "value", "unit", "split",
                  "model", "origin", "note"]
COLUMNS = ["id", "year", "month", "date", "title", "arxiv", "first_author", "venue", "domain", "domains",
           "paradigm", "pipeline", "methods", "data_sources", "base_models", "n_results", "secondary", "url",
           "modality", "pipeline_read", "adopted_methods"]


def _many(x: object) -> list:
    return [x] if isinstance(x, str | int) else list(x)  # type: ignore[arg-type]


def _year(y: object) -> int:
    try:
        return int(y)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValueError(f"year {y!r} is not a year (expected e.g. 2025)") from None


def _enum(enum: type, value: object) -> str:
    v = str(value).lower()
    allowed = [e.value for e in enum]
    if v not in allowed:
        label = re.sub(r"(?<!^)(?=[A-Z])", " ", enum.__name__).lower()  # DataSource -> data source
        raise ValueError(f"unknown {label} {printable(str(value))!r}; expected one of {', '.join(allowed)}")
    return v


__all__ = ["Catalog", "check_catalog", "normalise_title", "FIGURE2_SOURCES"]
