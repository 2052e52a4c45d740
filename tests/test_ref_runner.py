"""runner.run end to end: a 2-step smoke run of every method, the Run record, the non-finite stop."""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

import reference_impls.testing  # noqa: F401  (HF offline, 1 torch thread)
from reference_impls import runner
from reference_impls.methods import sft
from taxonomy.schema import Origin, Run, Split


@pytest.mark.parametrize("method", ["sft", "dpo", "grpo", "ppo"])
def test_two_step_smoke_run(method, tmp_path):
    r = runner.run(method, steps=2, out=tmp_path, progress=False, batch_size=16)
    assert isinstance(r, Run) and r.status == "finished" and r.message is None
    assert len(r.history) == 2 and all("loss" in h for h in r.history)
    saved = Run.model_validate_json((tmp_path / r.id / "run.json").read_text())
    assert saved == r
    last = tmp_path / r.id / f"stage-{len(r.pipeline.stages)}"  # the warm start is stage 1
    assert (last / "checkpoint.safetensors").exists() and (last / "model" / "config.json").exists()
    assert r.history[-1]["stage"] == len(r.pipeline.stages)
    em = {res.split: res for res in r.results if res.metric == "accuracy"}
    assert set(em) == {Split.in_distribution, Split.out_of_distribution}
    assert all(res.origin == Origin.measured and 0 <= res.value <= 100 for res in r.results)
    assert r.pipeline.method_ids() == (["sft", method] if method != "sft" else ["sft"])
    assert r.config["steps"] == 2 and r.seed == 0 and r.versions["torch"] == torch.__version__
    if method == "dpo":
        assert {"preference_accuracy", "reward_margin"} <= {res.metric for res in r.results}
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic writes leave no temporaries


def test_list_runs_and_unknown_options(tmp_path):
    a = runner.run("sft", steps=1, out=tmp_path, progress=False, batch_size=8)
    b = runner.run("sft", steps=1, out=tmp_path, progress=False, batch_size=8, seed=1)
    assert [r.id for r in runner.list_runs(tmp_path)] == [a.id, b.id]
    with pytest.raises(ValueError, match="unknown sft option"):
        runner.run("sft", steps=1, out=tmp_path, progress=False, no_such_option=1)
    with pytest.raises(ValueError, match="no reference implementation"):
        runner.run("nope", out=tmp_path)


def test_non_finite_loss_stops_run(tmp_path, monkeypatch):
    real = sft.sft_loss
    monkeypatch.setattr(sft, "sft_loss", lambda logp, mask, **kw: real(logp, mask, **kw) / 0.0 * 0.0)
    r = runner.run("sft", steps=3, out=tmp_path, progress=False, batch_size=8)
    assert r.status == "stopped"
    assert "loss" in r.message and "step 0" in r.message
    assert r.results == []
    assert json.loads((tmp_path / r.id / "run.json").read_text())["status"] == "stopped"


def test_exception_is_recorded_as_failed(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(sft, "sft_loss", boom)
    with pytest.raises(RuntimeError, match="boom"):
        runner.run("sft", steps=2, out=tmp_path, progress=False, batch_size=8)
    (saved,) = runner.list_runs(tmp_path)
    assert saved.status == "failed" and "boom" in saved.message
