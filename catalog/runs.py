"""Runs of our reference implementations, read back without torch, in the catalogue's result schema."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from taxonomy.schema import Run

# The RL diagnostics a Run's history carries (reference_impls/core/diagnostics.py writes them).
DIAGNOSTICS = ("reward", "frac_reward_zero_std", "entropy", "kl", "clip_ratio_low", "clip_ratio_high",
               "completion_len", "completion_len_max", "truncated_frac")


def diagnostics(run: Run) -> list[tuple[str, float, float]]:
    """(name, value at the last step, mean over steps) of each diagnostic the run logged."""
    rows = [h for h in run.history if h.get("step", 0) >= 0]
    out = []
    for k in DIAGNOSTICS:
        if v := [h[k] for h in rows if k in h]:
            out.append((k, v[-1], sum(v) / len(v)))
    return out


def load_runs(root: Path | str = "runs") -> tuple[list[Run], list[str]]:
    """Every `*/run.json` under root (newest first), plus a message for each file that does not parse."""
    runs, bad, where = [], [], {}
    for p in sorted(Path(root).glob("*/run.json")):
        try:
            run = Run.model_validate_json(p.read_text(encoding="utf-8"))
        except (ValidationError, ValueError, OSError) as e:
            bad.append(f"{p}: not a valid run record ({str(e).splitlines()[0]})")
            continue
        if run.id in where:  # a copied run folder: the same run once, not its results twice
            bad.append(f"{p}: run {run.id} is also recorded in {where[run.id]}; counted once")
            continue
        where[run.id] = p.parent
        runs.append(run)
    runs.sort(key=lambda r: r.created, reverse=True)
    return runs, bad


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    rows = [{"id": r.id, "created": r.created, "pipeline": " -> ".join(r.pipeline.method_ids()), "task": r.task,
             "model": r.model, "seed": r.seed, "device": r.device, "status": r.status,
             "steps": len(r.history), **{f"{x.benchmark}/{x.metric}": x.value for x in r.results}} for r in runs]
    return pd.DataFrame(rows)


def _paradigm(run: Run) -> str | None:
    from taxonomy.registry import load_registry
    from taxonomy.schema import derive_paradigm

    reg = load_registry()
    ids = [m for m in run.pipeline.method_ids() if m != "rm"]  # a reward-model stage trains no policy
    return str(derive_paradigm([reg[m].paradigm for m in ids])) if ids and all(m in reg for m in ids) else None


def runs_results(runs: list[Run], catalog=None) -> pd.DataFrame:
    """Measured results, with the same columns as `Catalog.results()`. A run that replicates a
    catalogued study (`sftrl replicate`) is filed under that study (its domain and year, when a
    catalogue is given); any other run under its own id. The run id is kept in `run`."""
    studies = {s.id: s for s in catalog.studies} if catalog is not None else {}
    rows = []
    for r in runs:
        st = studies.get(r.replicates) if r.replicates else None
        for x in r.results:
            rows.append({"study": r.replicates or r.id, "year": st.year if st else int(r.created[:4]),
                         "domain": st.domains[0].value if st else "math", "paradigm": _paradigm(r),
                         **x.model_dump(mode="json"), "model": x.model or r.model, "run": r.id})
    return pd.DataFrame(rows, columns=["study", "year", "domain", "paradigm", "benchmark", "metric", "value",
                                       "unit", "split", "model", "origin", "note", "run"])


def combined_results(catalog, root: Path | str = "runs") -> pd.DataFrame:
    """Reported results of the catalogue and measured results of our runs, in one table (`origin`
    tells them apart; a replication's rows carry the study's id, beside the study's own numbers)."""
    return pd.concat([catalog.results(), runs_results(load_runs(root)[0], catalog)], ignore_index=True)
