"""Runs survive interruption: SIGKILL after a checkpoint, then --resume, ends bit-identical (CPU)
to an uninterrupted run; an interrupted pipeline resumes in its second stage; no half-written run.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import reference_impls.testing  # noqa: F401  (HF offline, 1 torch thread)
from reference_impls import runner
from taxonomy.schema import Run

CLI = [sys.executable, "-c", "from sftrl_cli import main; main()"]
ROOT = Path(__file__).resolve().parents[1]


def _weights(rdir: Path, stage: int) -> dict:
    return load_file(str(rdir / f"stage-{stage}" / "model" / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def _strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "wall_s"} for h in history]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    args = ["run", "sft", "--steps", "150", "--set", "batch_size=16", "--save-every", "5",
            "--no-warm", "--threads", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, *args, "--out", str(killed)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(killed.glob("*/stage-1/checkpoint.safetensors")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (rdir,) = list(killed.iterdir())
    before = json.loads((rdir / "run.json").read_text())
    assert before["status"] == "running", "killed too late: the run had already finished"
    assert not (rdir / "stage-1" / "model").exists()

    res = subprocess.run([*CLI, "run", "--resume", str(rdir), "--threads", "1"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    resumed = Run.model_validate_json((rdir / "run.json").read_text())
    assert resumed.status == "finished" and len(resumed.history) == 150

    whole = tmp_path / "whole"
    res = subprocess.run([*CLI, *args, "--out", str(whole)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (wdir,) = list(whole.iterdir())
    uninterrupted = Run.model_validate_json((wdir / "run.json").read_text())
    assert _same(_weights(rdir, 1), _weights(wdir, 1))
    assert _strip(resumed.history) == _strip(uninterrupted.history)
    assert [r.value for r in resumed.results] == [r.value for r in uninterrupted.results]


def test_pipeline_interrupted_in_second_stage_resumes_exactly(tmp_path):
    kw = dict(steps=4, out=tmp_path, progress=False, batch_size=16, save_every=1)
    part = runner.run("sft,grpo", stop_after=2, **kw)
    assert part.status == "interrupted" and "--resume" in part.message
    rdir = tmp_path / part.id
    assert (rdir / "stage-1" / "stage.json").exists() and not (rdir / "stage-2" / "stage.json").exists()
    resumed = runner.run(resume=rdir, progress=False)
    whole = runner.run("sft,grpo", **kw)
    assert resumed.status == whole.status == "finished"
    assert resumed.pipeline.method_ids() == ["sft", "grpo"]  # sft starts raw: no warm-start stage
    assert _same(_weights(rdir, 2), _weights(tmp_path / whole.id, 2))
    assert _strip(resumed.history) == _strip(whole.history)
    assert not list(tmp_path.rglob("*.tmp*"))


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(runner.UsageError, match="not a run directory"):
        runner.run(resume=tmp_path)
