"""`build_site`: write the explorer (studies, methods, graph, trends, runs) as static files.

The site is a folder of HTML pages plus `assets/` (style, scripts, vendored KaTeX and cytoscape.js,
and the data as `<script>` files, so it works from `file://` where `fetch()` is refused).
Studies and methods get one static page each; the studies table and the graph are drawn in the
browser from the embedded data. A folder built before is replaced as a whole (it carries the marker
file `.sftrl-site`); any other non-empty folder is refused rather than overwritten.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import matplotlib

from catalog.catalog import Catalog
from catalog.export import to_bibtex
from catalog.report import write_trends
from catalog.runs import load_runs
from catalog.trends import FAMILY_PATTERNS, model_family
from explorer import pages
from explorer.html import (
    CYTOSCAPE,
    KATEX,
    KIND_COLOURS,
    KIND_HELP,
    PARADIGM_LABELS,
    SOURCE_LABELS,
    TEMPLATES,
    VENDOR,
    e,
    page,
)
from explorer.layout import graph_data
from explorer.trends_page import (
    arena_rows,
    arena_section,
    load_arenas,
    mentions,
    rows_table,
    trends_page,
)
from taxonomy.graph import build_graph
from taxonomy.schema import Domain, Run

PROJECT = Path(__file__).resolve().parents[1]
MARKER = ".sftrl-site"
WEB_DPI = 110
ASSETS = ("style.css", "site.js", "studies.js", "graph.js")


@dataclass
class SiteStats:
    """What a build wrote: counts, seconds, and each page's weight (its HTML plus what it loads)."""

    out: Path
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time: the build's cost on a machine others share
    studies: int
    methods: int
    runs: int
    arenas: int
    pages: int
    total_bytes: int
    page_bytes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def heaviest(self) -> tuple[str, int]:
        return max(self.page_bytes.items(), key=lambda kv: kv[1])


def _prepare(out: Path) -> None:
    if out.exists():
        if (out / MARKER).exists():
            shutil.rmtree(out)
        elif out.is_file() or any(out.iterdir()):
            raise FileExistsError(f"{out} is not empty and was not built by `sftrl site` (no {MARKER} file): "
                                  "choose a new or empty folder")
    (out / "assets" / "data").mkdir(parents=True, exist_ok=True)
    for sub in ("studies", "methods", "code"):
        (out / sub).mkdir(exist_ok=True)


def _js(name: str, value: Any) -> str:
    return f"window.{name} = {json.dumps(value, ensure_ascii=False, separators=(',', ':'))};\n"


def _bibtex(cat: Catalog) -> dict[str, str]:
    df = cat.frame()
    entries = re.split(r"\n\s*\n(?=@\w+\{)", to_bibtex(df).strip())
    if len(entries) != len(df):
        raise RuntimeError(f"BibTeX export gave {len(entries)} entries for {len(df)} studies")
    return dict(zip(df["id"], entries, strict=True))


def studies_data(cat: Catalog, bib: dict[str, str]) -> dict[str, Any]:
    """Everything the studies table filters on, one record per study (the same fields as `Catalog.query`)."""
    rows = []
    for s in cat.studies:
        sources = sorted({str(d.source) for st in s.pipeline.stages for d in st.data})
        benchmarks = sorted({r.benchmark for r in s.results})
        pipeline = " -> ".join(s.pipeline.method_ids())
        hay = " ".join([s.title, s.id, pipeline, s.arxiv, s.first_author or "", *s.base_models, *benchmarks])
        rows.append({
            "id": s.id, "year": s.year, "month": s.month, "title": s.title, "first_author": s.first_author or "",
            "arxiv": s.arxiv, "venue": s.venue or "", "domains": [str(d) for d in s.domains],
            "paradigm": str(cat.paradigm(s)), "methods": s.pipeline.method_ids(), "pipeline": pipeline,
            "data_sources": sources, "base_models": list(s.base_models),
            "families": sorted({model_family(m) for m in s.base_models}), "benchmarks": benchmarks,
            "hay": hay.lower(), "bib": bib[s.id],
        })
    used = {f for r in rows for f in r["families"]}
    return {
        "studies": rows,
        "domains": [d.value for d in Domain],
        "years": sorted({r["year"] for r in rows}),
        "paradigms": [[k, v] for k, v in PARADIGM_LABELS.items()],
        "sources": [[k, v] for k, v in SOURCE_LABELS.items()],
        "families": [f for f in [name for name, _ in FAMILY_PATTERNS] + ["Other"] if f in used],
        "methods": sorted([[m.id, m.name] for m in cat.registry.methods.values()], key=lambda x: x[1].lower()),
    }


def _code_file(impl: str | None) -> Path | None:
    if not impl:
        return None
    base = PROJECT / impl.replace(".", "/")
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _footer(cat: Catalog) -> str:
    return (f"sftrl explorer · {len(cat.studies)} studies · {len(cat.registry.methods)} methods · "
            f"{len(cat.registry.relations)} relations · built by <code>sftrl site</code> · maths by "
            f'<a href="ROOT{KATEX}/LICENSE">KaTeX</a>, graph by <a href="ROOT{CYTOSCAPE}/LICENSE">cytoscape.js</a>')


def _write(out: Path, rel: str, html: str) -> None:
    (out / rel).write_text(html, encoding="utf-8")


def build_site(out_dir: Path | str, data_dir: Path | str | None = None, runs_dir: Path | str | None = None,
               repo_url: str | None = None, arena_dir: Path | str | None = None) -> SiteStats:
    """Build the site into `out_dir` from the catalogue in `data_dir` (default: the built-in data/),
    the runs in `runs_dir` (default `runs/`; a missing folder means no runs) and the arena results in
    `arena_dir` (default the project's docs/arena/; missing means none). Raises DataError on bad data."""
    t0, c0 = time.perf_counter(), time.process_time()
    cat = Catalog.load(data_dir)
    out = Path(out_dir)
    _prepare(out)
    for name in ASSETS:
        shutil.copy2(TEMPLATES / name, out / "assets" / name)
    shutil.copytree(VENDOR, out / "assets" / "vendor", ignore=shutil.ignore_patterns("README.md"))
    g = build_graph(cat.registry)
    foot = _footer(cat)
    top, sub = foot.replace("ROOT", ""), foot.replace("ROOT", "../")
    warnings: list[str] = []

    runs, bad = load_runs(runs_dir if runs_dir is not None else "runs")
    warnings += bad
    arenas = load_arenas(Path(arena_dir) if arena_dir is not None else PROJECT / "docs" / "arena")
    image_href: dict[Path, str] = {}
    for a in arenas:
        for p in a["files"]:
            dest = out / "arena" / a["name"] / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
            image_href[p] = f"arena/{a['name']}/{p.name}"

    bib = _bibtex(cat)
    data = studies_data(cat, bib)
    gdata = graph_data(cat.registry)
    (out / "assets" / "data" / "studies.js").write_text(_js("SFTRL_STUDIES", data), encoding="utf-8")
    (out / "assets" / "data" / "graph.js").write_text(_js("SFTRL_GRAPH", gdata), encoding="utf-8")

    for s in cat.studies:
        _write(out, f"studies/{s.id}.html", pages.study_page(cat, s, bib[s.id], sub))
    for m in cat.registry.methods.values():
        code = _code_file(m.impl)
        code_href = None
        if code is not None:
            label = str(code.relative_to(PROJECT))
            _write(out, f"code/{m.id}.html", pages.code_page(label, code.read_text(encoding="utf-8"), m, sub))
            code_href = f"../code/{m.id}.html"
        repo_href = f"{repo_url.rstrip('/')}/blob/main/{code.relative_to(PROJECT)}" if repo_url and code else None
        m_runs = [r for r in runs if m.id in r.pipeline.method_ids()]
        m_arena = [f"<p>{e(a['name'])}</p>" + rows_table(rows) for a in arenas
                   if (rows := [r for r in arena_rows(a["data"]) if mentions(r, m.id)])]
        _write(out, f"methods/{m.id}.html", pages.method_page(cat, g, m, m_runs, m_arena, code_href, repo_href, sub))
    _write(out, "methods/index.html", pages.methods_index(cat, sub))
    _write(out, "index.html", _studies_index(cat, top))
    _write(out, "graph.html", _graph_page(top))

    with matplotlib.rc_context({"savefig.dpi": WEB_DPI}):  # screen resolution: half the pixels of print
        write_trends(cat, out / "trends", "png")
    _write(out, "trends.html", trends_page(out / "trends", len(cat.studies), arena_section(arenas, image_href), top))
    (out / MARKER).write_text("built by sftrl site; `sftrl site` may delete and rebuild this folder\n")
    return _stats(out, cat, runs, arenas, time.perf_counter() - t0, time.process_time() - c0, warnings)


def _fragment(name: str, **kw: str) -> str:
    return Template((TEMPLATES / name).read_text(encoding="utf-8")).substitute(**kw)


def _studies_index(cat: Catalog, footer: str) -> str:
    body = _fragment("studies.html", n=str(len(cat.studies)))
    return page("Studies", body, "", "studies", footer=footer,
                scripts=["assets/data/studies.js", "assets/data/graph.js", "assets/studies.js"])


def _graph_page(footer: str) -> str:
    dash = {"equivalent_under": ' stroke-dasharray="6 4"', "special_case_of": ' stroke-dasharray="2 3"'}
    legend = "".join(
        f'<li><svg width="34" height="10" aria-hidden="true"><line x1="0" y1="5" x2="34" y2="5" stroke="{c}" '
        f'stroke-width="3"{dash.get(k, "")}/></svg> '
        f"<strong>{k.replace('_', ' ')}</strong>: {e(KIND_HELP[k])}</li>" for k, c in KIND_COLOURS.items())
    body = _fragment("graph.html", legend=legend)
    return page("Method graph", body, "", "graph", footer=footer,
                scripts=[f"{CYTOSCAPE}/cytoscape.min.js", "assets/data/graph.js", "assets/graph.js"])


_REF = re.compile(r'(?:src|href)="([^"#?]+)[^"]*"')


def page_weight(html: Path) -> int:
    """Bytes of an HTML page plus the local scripts, styles and images it references."""
    total = html.stat().st_size
    text = html.read_text(encoding="utf-8")
    for ref in set(_REF.findall(text)):
        if ref.startswith(("http:", "https:", "mailto:")) or not ref.endswith((".js", ".css", ".png")):
            continue
        p = (html.parent / ref).resolve()
        if p.is_file():
            total += p.stat().st_size
    return total


def _stats(out: Path, cat: Catalog, runs: list[Run], arenas: list, seconds: float, cpu: float,
           warnings: list[str]) -> SiteStats:
    htmls = sorted(out.rglob("*.html"))
    return SiteStats(
        out=out, seconds=seconds, cpu_seconds=cpu, studies=len(cat.studies), methods=len(cat.registry.methods), runs=len(runs),
        arenas=len(arenas), pages=len(htmls),
        total_bytes=sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
        page_bytes={str(p.relative_to(out)): page_weight(p) for p in htmls}, warnings=warnings,
    )
