"""How a catalogue revision moved the paradigm shares, step by step, against the survey's Figure 2.

    git archive <old-commit> data | tar -x -C /tmp/old      # the catalogue before the revision
    python scripts/reaudit_report.py /tmp/old/data data --out docs/reaudit.md

Steps (each a set of studies and the pipelines they are counted with):
  before     the old catalogue as it was
  re-audit   the same studies, counted with their revised pipelines (e.g. an SFT stage found
             in the official code turns an RL-only study into a hybrid)
  scope      minus the studies marked multimodal (the survey covers text-only tasks)
  new        plus the studies added in the revision (text only): the survey-comparable catalogue
Then a table of every study whose paradigm or algorithm changed, with where the pipeline was read
and the words seen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from catalog import Catalog
from catalog.trends import PARADIGMS, SURVEY_PARADIGM, YEARS


def shares(cat: Catalog, studies) -> dict[int, dict[str, float]]:
    df = pd.DataFrame([{"year": s.year, "paradigm": str(cat.paradigm(s))} for s in studies])
    out = {}
    for y in YEARS:
        part = df[df["year"] == y] if len(df) else df
        n = len(part)
        out[y] = {"n": n, **{p: 100 * (part["paradigm"] == p).sum() / n if n else float("nan") for p in PARADIGMS}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path, help="the old catalogue's data directory")
    ap.add_argument("new", type=Path, help="the revised catalogue's data directory")
    ap.add_argument("--out", type=Path, help="write the Markdown report here (default: print it)")
    a = ap.parse_args()
    old, new = Catalog.load(a.old), Catalog.load(a.new)
    new_by_id = {s.id: s for s in new.studies}
    kept = [new_by_id[s.id] for s in old.studies if s.id in new_by_id]
    text = [s for s in kept if s.modality == "text"]
    added = [s for s in new.studies if s.id not in {o.id for o in old.studies}]
    steps = [("before (old catalogue)", old, old.studies),
             ("re-audit (same studies, revised pipelines)", new, kept),
             ("scope (minus multimodal)", new, text),
             ("new studies (text only): survey-comparable", new, text + [s for s in added if s.modality == "text"])]
    lines = ["# The catalogue's re-audit and the survey's Figure 2", "",
             f"Old catalogue: {len(old.studies)} studies; revised: {len(new.studies)} "
             f"({len(added)} added, {len(old.studies) - len(kept)} removed, "
             f"{sum(s.modality != 'text' for s in new.studies)} marked multimodal).", "",
             "Shares of studies per year (%): SFT-only / RL-only / hybrid, and n.", "",
             "| step | " + " | ".join(f"{y} SFT / RL / hybrid (n)" for y in YEARS) + " |",
             "| --- | " + " | ".join("---" for _ in YEARS) + " |"]
    for name, cat, studies in steps:
        sh = shares(cat, studies)
        lines.append(f"| {name} | " + " | ".join(
            f"{sh[y]['sft']:.0f} / {sh[y]['rl']:.0f} / **{sh[y]['hybrid']:.0f}** ({sh[y]['n']})" for y in YEARS) + " |")
    lines.append("| the survey's Figure 2 | " + " | ".join(
        f"{SURVEY_PARADIGM[y]['sft']:.0f} / {SURVEY_PARADIGM[y]['rl']:.0f} / **{SURVEY_PARADIGM[y]['hybrid']:.0f}**"
        for y in YEARS) + " |")
    old_by_id = {s.id: s for s in old.studies}
    changed = []
    for s in kept:
        o = old_by_id[s.id]
        if o.pipeline.method_ids() != s.pipeline.method_ids():
            changed.append((s, o))
    lines += ["", f"## The {len(changed)} studies whose pipeline changed", "",
              "| study | arXiv | before | after | paradigm | read in | words seen (URL) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for s, o in sorted(changed, key=lambda x: x[0].id):
        p0, p1 = str(old.paradigm(o)), str(new.paradigm(s))
        ev = (s.pipeline_evidence or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {s.id} | {s.arxiv} | {' → '.join(o.pipeline.method_ids())} | {' → '.join(s.pipeline.method_ids())} "
                     f"| {p0 if p0 == p1 else f'{p0} → **{p1}**'} | {s.pipeline_read or '—'} | {ev} |")
    read = pd.Series([str(s.pipeline_read) if s.pipeline_read else "not recorded" for s in new.studies]).value_counts()
    lines += ["", "## Where the pipelines were read (all studies)", "",
              "| read in | studies |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in read.items()], ""]
    report = "\n".join(lines)
    if a.out:
        a.out.write_text(report, encoding="utf-8")
    else:
        print(report)


if __name__ == "__main__":
    main()
