"""sftrl arena and sftrl replicate: budget plans, statistics worked out by hand, verdicts, and a
miniature arena end to end whose report is checked against the Runs it wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from catalog.runs import load_runs, runs_results
from reference_impls.arena import ArenaSpec, arena, claims, compare, mean_ci, plan
from reference_impls.replicate import map_study, replicate, runnable
from reference_impls.runner import UsageError
from taxonomy.schema import Study


def test_plan_splits_the_budget_in_rows_over_stages():
    spec = ArenaSpec(entries=["sft"], budget=6400)
    assert plan("sft", spec) == [("sft", 100)]  # batch 64 rows
    assert plan("sft+grpo", spec) == [("sft", 50), ("grpo", 50)]
    spec = ArenaSpec(entries=["sft"], budget=6400, stage_options={"grpo": {"batch_size": 32}})
    assert plan("sft+grpo", spec) == [("sft", 50), ("grpo", 100)]
    with pytest.raises(UsageError, match="--budget"):
        plan("sft", ArenaSpec(entries=["sft"], overrides={"steps": 3}))
    with pytest.raises(UsageError, match="no reference implementation"):
        plan("sft+nosuch", spec)


def test_intervals_and_comparisons_by_hand():
    m, hw = mean_ci([1.0, 2.0, 3.0])  # sd 1, t(2) = 4.303
    assert m == 2.0 and hw == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    seeds = lambda *xs: dict(enumerate(xs))  # noqa: E731
    d, hw, word = compare(seeds(1.0, 2.0, 3.0), seeds(0.0, 0.0, 0.0))  # d = 1,2,3: hw 2.484 > 2
    assert (d, word) == (2.0, "tie") and hw == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    # paired: a base that moves both entries (per-seed offsets 0, 30, 60) cancels out
    d, hw, word = compare(seeds(10.0, 41.0, 72.0), seeds(0.0, 30.0, 60.0))  # d = 10,11,12
    assert (d, word) == (11.0, "higher") and hw == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    assert compare(seeds(0.0, 30.0, 60.0), seeds(10.0, 41.0, 72.0))[2] == "lower"
    assert compare({0: 3.0}, {0: 1.0})[2].startswith("higher (one seed")
    assert compare({0: 1.0, 1: 2.0}, {1: 1.0, 2: 5.0})[2].startswith("higher (one seed")  # seed 1 only


def _runs(scores: dict[str, list[tuple[float, float]]], start: float = 10.0) -> dict:
    return {e: [{"seed": k, "status": "finished", "in_distribution": i, "out_of_distribution": o,
                 "start_in_distribution": start} for k, (i, o) in enumerate(v)] for e, v in scores.items()}


def test_verdicts_follow_the_numbers():
    spec = ArenaSpec(entries=["sft", "grpo", "sft+grpo", "luffy"])
    good = _runs({"sft": [(80, 1), (81, 2), (82, 1)], "grpo": [(40, 10), (41, 11), (42, 12)],
                  "sft+grpo": [(90, 20), (91, 21), (92, 22)], "luffy": [(95, 30), (96, 31), (97, 32)]})
    v = {c["claim"][0]: c["verdict"] for c in claims(spec, good)}
    assert v == {"1": "supported", "2": "supported", "3": "supported", "4": "supported"}
    bad = _runs({"sft": [(40, 10), (41, 11), (42, 12)], "grpo": [(80, 1), (81, 2), (82, 1)],
                 "sft+grpo": [(10, 0), (11, 0), (12, 0)], "luffy": [(5, 0), (6, 0), (7, 0)]}, start=50)
    v = {c["claim"][0]: c["verdict"] for c in claims(spec, bad)}
    assert v == {"1": "against", "2": "against", "3": "against", "4": "not tested"}  # base at 50%: no claim 4
    tie = _runs({"sft": [(50, 5), (70, 9), (60, 1)], "grpo": [(55, 6), (65, 2), (58, 7)]})
    assert claims(ArenaSpec(entries=["sft", "grpo"]), tie)[0]["verdict"] == "tie"
    half = _runs({"sft": [(80, 0), (81, 0), (82, 0)], "grpo": [(40, 0), (41, 0), (42, 0)]})  # OOD all 0
    assert claims(ArenaSpec(entries=["sft", "grpo"]), half)[0]["verdict"] == "partly supported"
    one = {e: rs[:1] for e, rs in good.items()}  # a single seed: no interval, direction only
    assert claims(spec, one)[0]["verdict"] == "supported (one seed: direction only)"


def test_mini_arena_report_matches_its_runs_and_resumes(tmp_path: Path):
    spec = ArenaSpec(entries=["sft", "grpo"], seeds=1, budget=128, eval_points=1)
    state = arena(spec, tmp_path, progress=False, command="sftrl arena --methods sft,grpo", log=lambda m: None)
    runs, bad = load_runs(tmp_path / "runs")
    assert not bad and len(runs) == 2 and {r.status for r in runs} == {"finished"}
    for row in state["table"]:
        (r,) = [r for r in runs if r.pipeline.method_ids()[-1] == row["entry"]]
        acc = {x.split.value: x.value for x in r.results if x.metric == "accuracy"}
        assert row["in_distribution"] == acc["in_distribution"]
        assert row["out_of_distribution"] == acc["out_of_distribution"]
        assert row["rows"] == 128  # the budget, in rows, as the history counts them
        assert r.history[0]["step"] == -1.0 and "eval_in_distribution" in r.history[0]  # curve's start
        assert r.pipeline.stages[0].hyperparameters["steps"] == 400  # the shared warm start
    md = (tmp_path / "arena.md").read_text()
    for row in state["table"]:
        assert f"| {row['entry']} | {row['paradigm']} | 1 | {row['in_distribution']:.1f} |" in md
    assert len(state["claims"]) == 4 and (tmp_path / "arena.png").stat().st_size > 10_000
    ids = sorted(r.id for r in runs)
    again = arena(spec, tmp_path, progress=False, log=lambda m: None)  # resumes: nothing retrained
    assert sorted(r.id for r in load_runs(tmp_path / "runs")[0]) == ids and again["table"] == state["table"]
    with pytest.raises(UsageError, match="different set-up"):
        arena(spec.model_copy(update={"budget": 256}), tmp_path, progress=False, log=lambda m: None)
    assert json.loads((tmp_path / "arena.json").read_text())["status"] == "finished"


def _study(*methods: str, approx: str | None = None) -> Study:
    return Study.model_validate({
        "id": "toy-study", "title": "Toy", "arxiv": "2501.00001", "domains": ["code"],
        "pipeline": [{"method": m, **({"approximation": approx} if approx and m == methods[-1] else {})}
                     for m in methods],
        "sources": ["https://arxiv.org/abs/2501.00001"]})


def test_replicate_maps_stages_and_refuses_silent_stand_ins():
    assert map_study(_study("sft", "grpo")).stages == ["sft", "grpo"]
    with pytest.raises(UsageError, match="rl-other.*--replace"):
        map_study(_study("sft", "rl-other"))
    mp = map_study(_study("sft", "rl-other"), replace={"rl-other": "grpo"})
    assert mp.stages == ["sft", "grpo"] and "replaced by grpo" in mp.notes[0]
    assert map_study(_study("sft", "rl-other"), skip_missing=True).stages == ["sft"]
    with pytest.raises(UsageError, match="no reference implementation named 'nosuch'"):
        map_study(_study("rl-other"), replace={"rl-other": "nosuch"})
    rows = runnable([_study("sft", "grpo"), _study("sft", "rl-other"), _study("ppo", approx="own update")])
    assert [r["runnable"] for r in rows] == ["yes", "no", "approximate"]


def test_replicated_run_sits_beside_the_study(tmp_path: Path):
    study = _study("sft", "rl-other")
    r = replicate(study, replace={"rl-other": "grpo"}, steps=1, out=tmp_path, progress=False)
    assert r.replicates == "toy-study" and "replaced by grpo" in r.config["notes"][0]
    res = runs_results(load_runs(tmp_path)[0], SimpleNamespace(studies=[study]))
    assert set(res["study"]) == {"toy-study"} and set(res["origin"]) == {"measured"}
    assert set(res["domain"]) == {"code"} and set(res["year"]) == {2025} and set(res["run"]) == {r.id}


def test_cli_replicate_then_studies_shows_measured_beside_reported(tmp_path: Path):
    from typer.testing import CliRunner

    from sftrl_cli import app

    cli = CliRunner()
    tmp_path = tmp_path / ("a-long-folder-name-" * 6)  # paths in messages must not be wrapped
    r = cli.invoke(app, ["replicate", "deepseekmath", "--steps", "1", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert f"recorded in {tmp_path}" in r.output and "replicates deepseekmath" in r.output
    r = cli.invoke(app, ["studies", "--text", "deepseekmath", "--results", "--runs", str(tmp_path), "-f", "csv"])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if x.startswith("deepseekmath,")]
    assert any(",reported," in x for x in lines) and any(",measured," in x for x in lines)
    (run_dir,) = [p for p in tmp_path.iterdir() if (p / "run.json").exists()]
    older = json.loads((run_dir / "run.json").read_text())
    older.update(id=older["id"] + "-older", created="2000-01-01T00:00:00+00:00")
    (tmp_path / older["id"]).mkdir()
    (tmp_path / older["id"] / "run.json").write_text(json.dumps(older))
    r = cli.invoke(app, ["runs", "show", "sft-grpo", "--out", str(tmp_path), "--figure", str(tmp_path / "c.png")])
    assert r.exit_code == 0 and "2 runs match 'sft-grpo'; showing the newest" in r.output
    assert f"{run_dir.name}  finished" in r.output  # the newest, not the older copy
    r = cli.invoke(app, ["replicate", "--list", "-f", "csv"])
    assert r.exit_code == 0 and "deepseekmath,sft -> grpo,yes," in r.output
    r = cli.invoke(app, ["replicate", "nosuchstudy"])
    assert r.exit_code == 2 and "no study 'nosuchstudy'" in r.output
    r = cli.invoke(app, ["arena", "--methods", "sft,nosuch", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "no reference implementation for 'nosuch'" in r.output
    r = cli.invoke(app, ["arena", "--methods", "sft", "--seeds", "0", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "seeds" in r.output
