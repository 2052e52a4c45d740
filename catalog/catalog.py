"""The catalogue: every study in `data/studies/*.yaml`, validated against the schema and the registry.

    >>> cat = Catalog.load()
    >>> cat.query(domain="math", paradigm="hybrid", year=2025)        # a pandas DataFrame
    >>> cat.query(method="grpo", include_descendants=True)            # GRPO and its offspring

One row per study in `frame()`; `stages()` and `results()` are the long tables behind it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from taxonomy.graph import build_graph, descendants
from taxonomy.loading import DataError, Problem, read_entries, suggest
from taxonomy.registry import Registry, check_registry, default_data_dir
from taxonomy.schema import FIGURE2_SOURCES, Domain, Paradigm, Study, derive_paradigm


def normalise_title(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", title.lower()).strip()


def check_catalog(data_dir: Path) -> tuple[Registry, list[Study], list[Problem]]:
    """Load registry and studies; return what validated and *all* problems found."""
    registry, problems = check_registry(data_dir)
    studies: list[Study] = []
    by_id: dict[str, str] = {}
    by_arxiv: dict[str, str] = {}
    by_title: dict[str, str] = {}
    files = sorted((data_dir / "studies").glob("*.yaml")) if (data_dir / "studies").is_dir() else []
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
        """One row per study; list-valued columns hold lists."""
        rows = []
        for s in self.studies:
            sources = sorted({str(d.source) for st in s.pipeline.stages for d in st.data})
            rows.append({
                "id": s.id, "year": s.year, "month": s.month, "date": s.date, "title": s.title,
                "arxiv": s.arxiv, "first_author": s.first_author, "venue": s.venue,
                "domain": str(s.domains[0]), "domains": [str(d) for d in s.domains],
                "paradigm": str(self.paradigm(s)),
                "pipeline": " -> ".join(s.pipeline.method_ids()),
                "methods": s.pipeline.method_ids(),
                "data_sources": sources,
                "base_models": list(s.base_models),
                "n_results": len(s.results),
                "secondary": s.secondary,
                "url": s.sources[0],
            })
        cols = ["id", "year", "month", "date", "title", "arxiv", "first_author", "venue", "domain",
                "domains", "paradigm", "pipeline", "methods", "data_sources", "base_models",
                "n_results", "secondary", "url"]
        return pd.DataFrame(rows, columns=cols)

    def stages(self) -> pd.DataFrame:
        """One row per (study, stage, data source); the unit for per-stage counting."""
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
        rows = [
            {"study": s.id, "year": s.year, "domain": str(s.domains[0]), "paradigm": str(self.paradigm(s)),
             **r.model_dump(mode="json")}
            for s in self.studies for r in s.results
        ]
        return pd.DataFrame(rows, columns=["study", "year", "domain", "paradigm", "benchmark",
                                           "metric", "value", "unit", "split", "model", "origin", "note"])

    # ------------------------------------------------------------------------ queries

    def query(
        self,
        domain: str | Iterable[str] | None = None,
        year: int | Iterable[int] | None = None,
        paradigm: str | Iterable[str] | None = None,
        method: str | None = None,
        include_descendants: bool = False,
        source: str | None = None,
        base_model: str | None = None,
        text: str | None = None,
    ) -> pd.DataFrame:
        """Filter studies. Every filter is optional; strings match case-insensitively.

        domain: any of a study's domains; method: a registry id appearing in the pipeline (with
        include_descendants, also any method derived from it in the graph); source: a data source
        of any stage; base_model: substring of a base model; text: substring of title/id/pipeline.
        """
        df = self.frame()
        if domain is not None:
            want = {_enum(Domain, d) for d in _many(domain)}
            df = df[df["domains"].map(lambda ds: bool(want & set(ds)))]
        if year is not None:
            df = df[df["year"].isin({int(y) for y in _many(year)})]
        if paradigm is not None:
            df = df[df["paradigm"].isin({_enum(Paradigm, p) for p in _many(paradigm)})]
        if method is not None:
            self.registry[method]  # raises KeyError with a suggestion
            ids = {method}
            if include_descendants:
                ids |= set(descendants(build_graph(self.registry), method))
            df = df[df["methods"].map(lambda ms: bool(ids & set(ms)))]
        if source is not None:
            src = source.lower()
            df = df[df["data_sources"].map(lambda ss: src in ss)]
        if base_model is not None:
            bm = base_model.lower()
            df = df[df["base_models"].map(lambda ms: any(bm in m.lower() for m in ms))]
        if text is not None:
            t = text.lower()
            hay = df["title"].str.lower() + " " + df["id"] + " " + df["pipeline"] + " " + df["arxiv"]
            df = df[hay.str.contains(t, regex=False)]
        return df.reset_index(drop=True)


def _many(x: object) -> list:
    return [x] if isinstance(x, str | int) else list(x)  # type: ignore[arg-type]


def _enum(enum: type, value: object) -> str:
    v = str(value).lower()
    allowed = [e.value for e in enum]
    if v not in allowed:
        raise ValueError(f"unknown {enum.__name__.lower()} {value!r}; expected one of {', '.join(allowed)}")
    return v


__all__ = ["Catalog", "check_catalog", "normalise_title", "FIGURE2_SOURCES"]
