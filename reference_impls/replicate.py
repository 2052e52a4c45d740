"""`sftrl replicate STUDY`: a catalogued study's pipeline, run with our implementations.

Each stage of the study's recorded pipeline maps to the method of the same id. A stage whose method
has no reference implementation (e.g. `rl-other`, "RL whose algorithm the source does not name")
stops the replication unless the user says what to do: `--replace rl-other=grpo` (recorded in the
Run's stage note) or `--skip-missing` (the stage is left out, and the note says so). Stages the
catalogue marks as approximations of the paper's own algorithm run as recorded and are flagged.

The run is on the task, dataset and model the user names (the tiny preset by default: the study's
pretrained base is then stood in for by the cached warm-start base). The Run records
`replicates: STUDY`; its results sit beside the study's reported ones in
`catalog.runs.combined_results` and `sftrl studies --results --runs DIR`, marked measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from reference_impls import runner
from reference_impls.runner import METHODS, UsageError
from taxonomy.schema import Run, Study


@dataclass
class Mapping:
    stages: list[str]  # method ids to run, in order
    notes: list[str]  # what was replaced, skipped or approximated
    missing: list[str]  # stage methods with no implementation, before --replace / --skip-missing


def map_study(study: Study, replace: dict[str, str] | None = None, skip_missing: bool = False) -> Mapping:
    """The study's stages as runnable method ids, or a UsageError naming what cannot run."""
    replace = replace or {}
    for new in replace.values():
        if new not in METHODS:
            raise UsageError(f"--replace …={new}: no reference implementation named {new!r}")
    stages, notes, missing = [], [], []
    for i, st in enumerate(study.pipeline.stages, 1):
        m = st.method
        if st.approximation:
            notes.append(f"stage {i} ({m}) approximates the paper's algorithm: {st.approximation}")
        if m in METHODS:
            stages.append(m)
            continue
        missing.append(m)
        if m in replace:
            stages.append(replace[m])
            notes.append(f"stage {i}: {m} has no implementation; replaced by {replace[m]} (--replace)")
        elif skip_missing:
            notes.append(f"stage {i}: {m} has no implementation; skipped (--skip-missing)")
    unresolved = [m for m in missing if m not in replace and not skip_missing]
    if unresolved:
        raise UsageError(f"{study.id}: no reference implementation for stage method(s) "
                         f"{', '.join(dict.fromkeys(unresolved))}; say --replace {unresolved[0]}=<method> "
                         "or --skip-missing")
    if not stages:
        raise UsageError(f"{study.id}: nothing left to run after skipping {', '.join(missing)}")
    return Mapping(stages, notes, missing)


def runnable(studies: list[Study]) -> list[dict[str, str]]:
    """For `sftrl replicate --list`: each study's pipeline and whether it runs as recorded."""
    rows = []
    for s in studies:
        ids = s.pipeline.method_ids()
        missing = sorted({m for m in ids if m not in METHODS})
        approx = any(st.approximation for st in s.pipeline.stages)
        rows.append({"study": s.id, "pipeline": " -> ".join(ids),
                     "runnable": "no" if missing else ("approximate" if approx else "yes"),
                     "missing": ", ".join(missing)})
    return rows


def replicate(study: Study, *, replace: dict[str, str] | None = None, skip_missing: bool = False,
              model: str = "tiny", **run_kw) -> Run:
    """Run the study's mapped pipeline (runner.run keywords pass through) and record `replicates`."""
    mp = map_study(study, replace, skip_missing)
    run_kw.setdefault("warm", model == "tiny")  # the warm start stands in for the study's pretrained base
    return runner.run(mp.stages, model=model, replicates=study.id, notes=mp.notes, **run_kw)
