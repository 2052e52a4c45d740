"""Every registry method whose `impl` is set imports, is runnable by the runner, and trains two steps."""

from __future__ import annotations

import importlib
import math

import pytest

import reference_impls.testing  # noqa: F401  (pins torch to one thread for stable timings)
from reference_impls import runner
from taxonomy.registry import load_registry

IMPLEMENTED = sorted(m.id for m in load_registry().methods.values() if m.impl)
FAST = {"gkd": {"teacher_steps": 20}}  # a method's own warm start (gkd's teacher), shortened for plumbing tests


def test_registry_and_runner_agree():
    assert sorted(runner.METHODS) == sorted(IMPLEMENTED + list(runner.AUXILIARY))
    for mid in IMPLEMENTED:
        assert importlib.import_module(load_registry()[mid].impl) is runner.METHODS[mid]


@pytest.mark.parametrize("method", IMPLEMENTED)
def test_two_steps_of_every_implemented_method(method, tmp_path):
    multi_turn = "multi_turn" in getattr(runner.METHODS[method], "NEEDS", ())
    r = runner.run(method, task="guess" if multi_turn else "addition", steps=2, out=tmp_path,
                   progress=False, seed=0, **FAST.get(method, {}))
    assert r.status == "finished" and len(r.history) == 2 * len(runner.parse_pipeline(method))
    assert all(math.isfinite(v) for h in r.history for v in h.values())
    assert r.pipeline.stages[-1].method == runner.parse_pipeline(method)[-1]
    assert {x.origin for x in r.results} == {"measured"}
    assert (tmp_path / r.id / "run.json").exists()


def test_runs_load_beside_reported_results_without_torch_side_effects(tmp_path):
    from catalog import Catalog
    from catalog.runs import combined_results, load_runs, runs_results

    runner.run("sft", steps=2, out=tmp_path, progress=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    runs, bad = load_runs(tmp_path)
    assert len(runs) == 1 and len(bad) == 1 and "broken" in bad[0]
    res = runs_results(runs)
    assert set(res["origin"]) == {"measured"} and set(res["paradigm"]) == {"sft"}
    both = combined_results(Catalog.load(), tmp_path)
    assert set(both["origin"]) == {"reported", "measured"}
    assert list(both.columns) == [*Catalog.load().results().columns, "run"]  # + the run id of measured rows
    assert set(both.loc[both["origin"] == "measured", "run"]) == {runs[0].id}


@pytest.fixture(scope="module")
def user_jsonl(tmp_path_factory):
    """A file in TRL's columns with every signal: completion (demonstration and expert solution),
    chosen/rejected (pairs, and unpaired singletons from them), answer (the reward's reference)."""
    import json
    import random

    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = []
    for _ in range(64):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        steps = f"{a % 10}+{b % 10}={a % 10 + b % 10}\n{a + b}"
        rows.append({"prompt": f"{a}+{b}=", "completion": steps, "chosen": steps,
                     "rejected": f"{steps[:-1]}{(a + b + 1) % 10}", "answer": str(a + b)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("method", IMPLEMENTED)
def test_every_method_runs_on_reasoning_gym_and_a_user_jsonl(method, user_jsonl, tmp_path):
    """`sftrl run M` on a reasoning-gym generator and on a user's JSONL (raw tiny model, one step
    per stage: this checks the plumbing of every signal, not learning)."""
    for kw in (dict(task="rg:basic_arithmetic", task_options={"eval_size": 4}),
               dict(data=str(user_jsonl))):
        if "multi_turn" in getattr(runner.METHODS[method], "NEEDS", ()):  # archer: refused cleanly
            with pytest.raises(runner.UsageError, match="needs multi_turn"):
                runner.run(method, steps=1, out=tmp_path, progress=False, warm=False, **kw)
            continue
        r = runner.run(method, steps=1, out=tmp_path, progress=False, warm=False, **kw, **FAST.get(method, {}))
        assert r.status == "finished", (kw, r.message)
        assert all(math.isfinite(x.value) for x in r.results)
