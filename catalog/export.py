"""Exports of a study table: CSV, JSON, Markdown, BibTeX."""

from __future__ import annotations

import json
import re

import pandas as pd


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if out[c].map(lambda v: isinstance(v, list)).any():
            out[c] = out[c].map(lambda v: "; ".join(map(str, v)) if isinstance(v, list) else v)
    return out


def to_csv(df: pd.DataFrame) -> str:
    return _flat(df).to_csv(index=False)


def to_json(df: pd.DataFrame) -> str:
    return json.dumps(json.loads(df.to_json(orient="records", date_format="iso")), indent=2) + "\n"


def to_markdown(df: pd.DataFrame) -> str:
    flat = _flat(df).fillna("")
    cells = [[str(v).replace("|", "\\|").replace("\n", " ") for v in row] for row in flat.itertuples(index=False)]
    head = "| " + " | ".join(flat.columns) + " |"
    sep = "| " + " | ".join("---" for _ in flat.columns) + " |"
    return "\n".join([head, sep] + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"


def to_bibtex(df: pd.DataFrame) -> str:
    """@misc entries with arXiv eprint fields; the key is the study id."""
    out = []
    for r in df.itertuples(index=False):
        fields = {
            "title": "{" + r.title + "}",
            "author": r.first_author + " and others" if getattr(r, "first_author", None) else None,
            "year": str(r.year),
            "eprint": r.arxiv,
            "archivePrefix": "arXiv",
            "url": f"https://arxiv.org/abs/{r.arxiv}",
            "note": r.venue if getattr(r, "venue", None) else None,
        }
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items() if v)
        out.append(f"@misc{{{re.sub(r'[^A-Za-z0-9_-]', '', r.id)},\n{body}\n}}")
    return "\n\n".join(out) + "\n"


FORMATS = {"csv": to_csv, "json": to_json, "markdown": to_markdown, "bibtex": to_bibtex}
