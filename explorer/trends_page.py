"""The trends page: every figure of `sftrl trends`, the numbers behind each as tables, and arena results."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from explorer.html import dl, e, link, page, table

# (figure, heading, what it shows, tables behind it): figures and CSVs come from catalog.report.write_trends.
FIGURES = (
    ("paradigm_by_year", "Training paradigm per year — the survey's Figure 2, redrawn",
     "One count per study, by the paradigm derived from its pipeline, by the year of its first arXiv "
     "version. Bars: this catalogue with 95% Wilson intervals; diamonds: the survey (arXiv 2603.13985).",
     ("paradigm_by_year", "paradigm_by_year_inherited_sft", "paradigm_by_year_domain")),
    ("data_source_by_year", "Source of training data per year — the survey's Figure 2, redrawn",
     "Unit: distinct (study, source) mentions, so a study using benchmark and GPT-4 data counts once "
     "under each; shares sum to 100% per year.", ("data_source_by_year",)),
    ("algorithm_adoption", "Adoption of RL, preference and hybrid algorithms",
     "Studies per year whose pipeline uses each method in any stage.", ("algorithm_adoption",)),
    ("domain_paradigm", "Studies by domain and paradigm", "Counts; primary domain of each study.",
     ("domain_paradigm",)),
    ("base_model_families", "Base-model families per year",
     "Studies per year that fine-tune a model of each family (a study counts once per family).",
     ("base_model_families",)),
    ("method_graph", "The method graph (static)",
     "x = year of the method's paper, y = family; the interactive version is on the graph page.", ()),
    ("census", "Literature census", "The survey's Appendix B counts (papers per domain and year).", ()),
)
TABLE_TITLES = {
    "paradigm_by_year": "Paradigm shares per year, ours and the survey's",
    "paradigm_by_year_inherited_sft": "Sensitivity: RL-only studies starting from an instruction-tuned "
                                      "model counted as hybrid",
    "paradigm_by_year_domain": "Paradigm shares per year and domain",
    "data_source_by_year": "Data-source shares per year, ours and the survey's",
    "algorithm_adoption": "Studies per year using each algorithm",
    "domain_paradigm": "Studies by primary domain (rows) and paradigm (columns)",
    "base_model_families": "Studies per year by base-model family",
}


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.1f}"
    return e(v)


def frame_table(df: pd.DataFrame, caption: str = "") -> str:
    headers = [e(str(c).replace("_", " ")) for c in df.columns]
    return table(headers, [[_cell(v) for v in row] for row in df.itertuples(index=False)], caption=e(caption))


def _figure(trends_dir: Path, name: str, title: str, caption: str, tables: tuple[str, ...]) -> str:
    if not (trends_dir / f"{name}.png").exists():
        return ""
    parts = [f'<section class="figure" aria-labelledby="h-{name}"><h2 id="h-{name}">{e(title)}</h2>',
             f'<figure><img src="trends/{name}.png" alt="{e(title)}" loading="lazy">'
             f"<figcaption>{e(caption)}</figcaption></figure>"]
    for i, t in enumerate(tables):
        csv = trends_dir / f"{t}.csv"
        if not csv.exists():
            continue
        df = pd.read_csv(csv)
        opened = " open" if i == 0 else ""
        parts.append(f"<details{opened}><summary>{e(TABLE_TITLES.get(t, t))} "
                     f"({link(f'trends/{t}.csv', 'CSV')})</summary>{frame_table(df)}</details>")
    return "".join(parts) + "</section>"


# ---------------------------------------------------------------------------- arena results


def load_arenas(root: Path) -> list[dict[str, Any]]:
    """Every `root/*/arena.json` that parses, with the figures and report beside it (`sftrl arena`
    writes arena.json, arena.png, arena.md). A missing root or an unreadable file is skipped silently."""
    found = []
    for p in sorted(root.glob("*/arena.json")) if root.is_dir() else []:
        try:
            found.append({"name": p.parent.name, "data": json.loads(p.read_text(encoding="utf-8")),
                          "files": sorted([*p.parent.glob("*.png"), *p.parent.glob("*.md")])})
        except (OSError, ValueError):
            continue
    return found


def arena_rows(data: Any) -> list[dict[str, Any]]:
    """The per-entry records of an arena file: its "table", else its first list of records."""
    if isinstance(data, list):
        return [r for r in data if isinstance(r, dict)]
    if isinstance(data, dict):
        for v in [data.get("table"), *data.values()]:
            if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
                return v
    return []


def _flat(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:,.1f}"
    if isinstance(v, dict | list):
        return json.dumps(v)[:200]
    return str(v)


def rows_table(rows: list[dict[str, Any]]) -> str:
    """One column per key; a key `x_ci` is shown with `x` as 'mean ± half-width'."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cols = [k for k in keys if not (k.endswith("_ci") and k[:-3] in keys)][:12]

    def cell(r: dict[str, Any], c: str) -> str:
        v, ci = r.get(c, ""), r.get(f"{c}_ci")
        if isinstance(v, float) and isinstance(ci, float) and not math.isnan(v) and not math.isnan(ci):
            return f"{v:.1f} ± {ci:.1f}"
        return _flat(v)

    return table([e(c.replace("_", " ")) for c in cols], [[e(cell(r, c)) for c in cols] for r in rows])


def mentions(row: dict[str, Any], method: str) -> bool:
    """Whether an arena record names a method (in an entry/method/pipeline field such as 'sft+grpo')."""
    for key in ("entry", "method", "methods", "pipeline", "name"):
        v = row.get(key)
        text = " ".join(map(str, v)) if isinstance(v, list) else str(v or "")
        if method in re.split(r"[\s,+>]+|->", text):
            return True
    return False


def arena_section(arenas: list[dict[str, Any]], hrefs: dict[Path, str]) -> str:
    if not arenas:
        return ""
    out = ['<section aria-labelledby="h-arena"><h2 id="h-arena">Measured by our code: arena results</h2>']
    for a in arenas:
        data = a["data"] if isinstance(a["data"], dict) else {}
        spec = data.get("spec") if isinstance(data.get("spec"), dict) else {}
        facts = [("command", f"<code>{e(data['command'])}</code>" if data.get("command") else ""),
                 ("status", e(data.get("status", "")))]
        facts += [(e(k), e(_flat(v))) for k, v in spec.items() if not isinstance(v, dict | list) and v is not None]
        out.append(f"<h3>{e(a['name'])}</h3>{dl(facts)}")
        for p in a["files"]:
            if p not in hrefs:
                continue
            out.append(f'<figure><img src="{e(hrefs[p])}" alt="arena {e(a["name"])}: {e(p.stem)}" loading="lazy">'
                       "</figure>" if p.suffix == ".png" else f"<p>{link(hrefs[p], 'The arena report (Markdown)')}</p>")
        rows = arena_rows(a["data"])
        out.append(rows_table(rows) if rows else f'<pre class="code">{e(json.dumps(a["data"], indent=1)[:20000])}</pre>')
        claims = [c for c in data.get("claims") or [] if isinstance(c, dict)]
        if claims:
            out.append(table(["Claim", "Verdict", "Numbers"], [[e(c.get("claim", "")), e(c.get("verdict", "")),
                                                                e(c.get("numbers", ""))] for c in claims],
                             caption="The survey's claims, as these runs answer them"))
    return "".join(out) + "</section>"


def trends_page(trends_dir: Path, n_studies: int, arenas: str, footer: str) -> str:
    figures = "".join(_figure(trends_dir, *f) for f in FIGURES)
    body = (f"<h1>Trends</h1><p>Computed from the {n_studies} catalogued studies with "
            f"<code>sftrl trends</code>; each figure is followed by the numbers behind it. "
            f"{link('trends/trends.md', 'The full report (Markdown)')} states sample sizes and where we differ "
            f"from the survey.</p>" + figures + arenas)
    return page("Trends", body, "", "trends", footer=footer)
