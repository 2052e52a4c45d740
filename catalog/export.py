"""Exports of a table: CSV, JSON, Markdown, BibTeX.

A table is a pandas DataFrame or a `Rows` (plain dicts, no pandas import: what the CLI prints for
`methods list`, `graph neighbours` and `studies`, so those answer without loading pandas).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class Rows:
    """A small table: column names and one dict per row. Read like a DataFrame where the CLI
    needs it (`columns`, `len`, `rows[cols]`, `itertuples(index=False)`)."""

    def __init__(self, rows: Sequence[dict[str, Any]], columns: Sequence[str]):
        self.records = list(rows)
        self.columns = list(columns)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, cols: Sequence[str]) -> Rows:
        return Rows(self.records, [c for c in cols if c in self.columns])

    def itertuples(self, index: bool = False) -> Iterator[tuple]:
        for r in self.records:
            yield tuple(r.get(c) for c in self.columns)

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{c: r.get(c) for c in self.columns} for r in self.records], columns=self.columns)


Table = Any  # pd.DataFrame | Rows


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _cell(v: Any) -> Any:
    if isinstance(v, list):
        return "; ".join(map(str, v))
    return "" if _missing(v) else v


def _json_value(v: Any) -> Any:
    if isinstance(v, datetime | date):  # as pandas' to_json(date_format="iso") writes them
        return (v if isinstance(v, datetime) else datetime(v.year, v.month, v.day)).isoformat(
            timespec="milliseconds")
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if out[c].map(lambda v: isinstance(v, list)).any():
            out[c] = out[c].map(lambda v: "; ".join(map(str, v)) if isinstance(v, list) else v)
    return out


def to_csv(df: Table) -> str:
    if not isinstance(df, Rows):
        return _flat(df).to_csv(index=False)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(df.columns)
    w.writerows([_cell(v) for v in row] for row in df.itertuples())
    return buf.getvalue()


def to_json(df: Table) -> str:
    if not isinstance(df, Rows):
        return json.dumps(json.loads(df.to_json(orient="records", date_format="iso")), indent=2) + "\n"
    recs = [{c: _json_value(v) for c, v in zip(df.columns, row, strict=True)} for row in df.itertuples()]
    return json.dumps(recs, indent=2) + "\n"


def to_markdown(df: Table) -> str:
    if isinstance(df, Rows):
        columns, rows = df.columns, [[_cell(v) for v in row] for row in df.itertuples()]
    else:
        flat = _flat(df).fillna("")
        columns, rows = list(flat.columns), list(flat.itertuples(index=False))
    cells = [[str(v).replace("|", "\\|").replace("\n", " ") for v in row] for row in rows]
    head = "| " + " | ".join(columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    return "\n".join([head, sep] + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v.strip() else None


def to_bibtex(df: Table) -> str:
    """@misc entries with arXiv eprint fields; the key is the study id."""
    if "arxiv" not in df.columns or "title" not in df.columns:
        raise ValueError("BibTeX needs a table of studies (with arxiv and title columns)")
    cols = list(df.columns)
    out = []
    for row in df.itertuples(index=False):
        r = dict(zip(cols, row, strict=True))
        author = _text(r.get("first_author"))
        fields = {
            "title": "{" + str(r["title"]).replace("{", "\\{").replace("}", "\\}") + "}",
            "author": author + " and others" if author else None,
            "year": str(r["year"]) if "year" in r else None,
            "eprint": r["arxiv"],
            "archivePrefix": "arXiv",
            "url": f"https://arxiv.org/abs/{r['arxiv']}",
            "note": _text(r.get("venue")),
        }
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items() if v)
        out.append(f"@misc{{{re.sub(r'[^A-Za-z0-9_-]', '', str(r['id']))},\n{body}\n}}")
    return "\n\n".join(out) + "\n"


FORMATS = {"csv": to_csv, "json": to_json, "markdown": to_markdown, "bibtex": to_bibtex}
