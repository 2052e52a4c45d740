"""Misuse suite (issue 21): what a new user does wrong ends in a run or a one-line error naming the
file, row or option, never in a traceback, a hang or a record made worse than it was."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import reference_impls.testing  # noqa: F401  (HF offline, 1 torch thread)
from reference_impls import runner
from reference_impls.core.train import NonFiniteError, TrainConfig, train
from reference_impls.tasks.rewards import RewardError, as_number, make_reward
from taxonomy.schema import Run


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _sums(n: int = 12) -> list[dict]:
    return [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(n) for b in range(3)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    r = runner.run("sft", steps=2, warm=False, out=out, progress=False, batch_size=4)
    assert r.status == "finished"
    return out / r.id


# ------------------------------------------------------------------------------ data
def test_prompt_answer_data_warm_starts_from_answers(tmp_path):
    data = _jsonl(tmp_path / "pa.jsonl", _sums())
    r = runner.run("grpo", data=str(data), reward="exact", steps=1, out=tmp_path / "o", progress=False,
                   warm_steps=3, batch_size=4, group_size=2)
    assert r.status == "finished"
    assert "answer (the data has no completions)" in r.pipeline.stages[0].data[0].name


def test_nothing_to_imitate_is_one_line(tmp_path):
    (tmp_path / "myreward.py").write_text("def score(prompt, completion, **kw):\n    return 1.0\n")
    sys.path.insert(0, str(tmp_path))
    try:
        data = _jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}, {"prompt": "yo"}])
        with pytest.raises(runner.UsageError, match="--no-warm"):
            runner.run("grpo", data=str(data), reward="myreward:score", steps=1, out=tmp_path / "o", progress=False)
        assert not list((tmp_path / "o").glob("*/run.json"))  # refused before anything was recorded
    finally:
        sys.path.remove(str(tmp_path))


def test_null_completion_names_the_row(tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": None}])
    with pytest.raises(runner.UsageError, match=r"d.jsonl:2: completion: null"):
        runner.run("sft", data=str(data), steps=1, out=tmp_path / "o", progress=False)


def test_non_utf8_names_the_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff"}\n')
    with pytest.raises(runner.UsageError, match=r"bad.jsonl:2: not UTF-8"):
        runner.run("sft", data=str(tmp_path / "bad.jsonl"), steps=1, out=tmp_path / "o", progress=False)


def test_row_longer_than_the_context_is_refused_before_training(tmp_path):
    rows = [{"prompt": "1+1=", "completion": "2"}] * 3 + [{"prompt": "x" * 3000, "completion": "y"}]
    data = _jsonl(tmp_path / "long.jsonl", rows)
    t0 = time.perf_counter()
    with pytest.raises(runner.UsageError, match=r"long.jsonl:4: prompt 3000 tokens .* context of 2048"):
        runner.run("sft", data=str(data), steps=1, out=tmp_path / "o", progress=False)
    assert time.perf_counter() - t0 < 30


# ------------------------------------------------------------------------------ rewards
def _reward_module(tmp_path: Path, name: str, body: str):
    (tmp_path / f"{name}.py").write_text(body)
    sys.path.insert(0, str(tmp_path))
    return f"{name}:score"


@pytest.mark.parametrize("body, match", [
    ("def score(:\n", "syntax error"),
    ("import no_such_module_here\ndef score(p, c, **k):\n    return 1\n", "ModuleNotFoundError"),
    ("score = 3\n", "has no function 'score'"),
])
def test_broken_reward_module_is_one_line(tmp_path, body, match):
    name = f"rw_{abs(hash(body)) % 10**8}"
    try:
        with pytest.raises(ValueError, match=match):
            make_reward(_reward_module(tmp_path, name, body))
    finally:
        sys.path.remove(str(tmp_path))


def test_reward_values_and_timeout(tmp_path, monkeypatch):
    import numpy as np
    import torch

    assert as_number(np.float32(0.5)) == 0.5 and as_number(torch.tensor(1.0)) == 1.0 and as_number(2) == 2.0
    assert as_number(float("nan")) is None and as_number(True) is None and as_number("1") is None
    body = "import time\ndef score(p, c, **k):\n    if c == 'hang':\n        time.sleep(60)\n    return float('nan') if c == 'nan' else 0.5\n"
    try:
        fn = make_reward(_reward_module(tmp_path, "rw_hang", body))
    finally:
        sys.path.remove(str(tmp_path))
    from reference_impls.tasks.base import Problem

    p = Problem(prompt="q", meta={"_where": "d.jsonl:7"})
    assert fn(p, "ok") == 0.5
    with pytest.raises(RewardError, match=r"returned nan on d.jsonl:7"):
        fn(p, "nan")
    monkeypatch.setenv("SFTRL_REWARD_TIMEOUT", "0.3")
    t0 = time.perf_counter()
    with pytest.raises(RewardError, match=r"d.jsonl:7: no answer within 0.3 s"):
        fn(p, "hang")
    assert time.perf_counter() - t0 < 5


def test_model_reward_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        make_reward(f"model:{tmp_path / 'nope'}")


def test_a_nan_reward_is_not_blamed_on_the_weights():
    class Algo:  # collect fails the way a reward returning NaN does
        module = __import__("torch").nn.Linear(2, 2)

        def collect(self, step):
            raise RewardError("reward m:f returned nan on d.jsonl:3; expected a finite number")

    with pytest.raises(RewardError, match="returned nan"):
        train(Algo(), TrainConfig(steps=1), progress=False)

    class Sampling(Algo):
        def collect(self, step):
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")

    with pytest.raises(NonFiniteError, match="weights diverged"):
        train(Sampling(), TrainConfig(steps=1), progress=False)


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize("opt, match", [({"lr": -1.0}, "lr must be positive"),
                                        ({"batch_size": 0}, "batch_size must be at least 1"),
                                        ({"lr": float("nan")}, "lr must be a finite number"),
                                        ({"temperature": 0.0}, "temperature must be positive")])
def test_config_ranges(tmp_path, opt, match):
    method = "grpo" if "temperature" in opt else "sft"
    with pytest.raises(runner.UsageError, match=match):
        runner.run(method, steps=1, out=tmp_path, progress=False, **opt)


def test_nproc_validates_before_launching(monkeypatch):
    import sftrl_cli
    import sftrl_cli_train

    launched = []
    monkeypatch.setattr(sftrl_cli_train, "_launch", lambda n: launched.append(n))
    for args, match in ((["run", "nosuch", "--nproc", "2"], "no reference implementation"),
                        (["run", "sft", "--nproc", "2", "--set", "lr=-1"], "lr must be positive"),
                        (["run", "sft", "--nproc", "2", "--set", "nosuch=1"], "unknown sft option")):
        res = CliRunner().invoke(sftrl_cli.app, args)
        assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output
    assert launched == []


# ------------------------------------------------------------------------------ run records
def test_resume_of_a_finished_run_rewrites_nothing(finished):
    before = (finished / "run.json").stat().st_mtime_ns
    r = runner.run(resume=finished, progress=False)
    assert r.status == "finished" and (finished / "run.json").stat().st_mtime_ns == before
    with pytest.raises(runner.UsageError, match="continues its own pipeline"):
        runner.run("grpo", resume=finished, progress=False)


@pytest.mark.parametrize("damage, match", [
    (lambda d: (d / "spec.json").write_text("{\"id\": "), "spec.json cannot be read"),
    (lambda d: (d / "spec.json").write_text("{}"), "spec.json is damaged"),
    (lambda d: (d / "stage-1" / "stage.json").write_text("{\"history\": ["), "stage.json is damaged"),
])
def test_damaged_resume_refuses_and_keeps_the_record(finished, tmp_path, damage, match):
    import shutil

    rdir = tmp_path / finished.name
    shutil.copytree(finished, rdir)
    rec = json.loads((rdir / "run.json").read_text())
    rec["status"] = "interrupted"  # as if killed: resumable, and its record must survive a failed resume
    (rdir / "run.json").write_text(json.dumps(rec))
    damage(rdir)
    before = (rdir / "run.json").read_bytes()
    with pytest.raises(runner.UsageError, match=match):
        runner.run(resume=rdir, progress=False)
    assert (rdir / "run.json").read_bytes() == before


def test_a_resume_keeps_the_old_record_while_it_runs(tmp_path, monkeypatch):
    r = runner.run("sft", steps=2, warm=False, out=tmp_path, progress=False, batch_size=4, stop_after=1)
    rdir, seen = tmp_path / r.id, []

    def killed(*a, **k):  # what a SIGKILL in the middle of the resume would leave on disk
        seen.append(Run.model_validate_json((rdir / "run.json").read_text()))
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run(resume=rdir, progress=False)
    assert seen[0].status == "interrupted" and len(seen[0].history) == 1


def test_truncated_checkpoint_is_named(tmp_path):
    r = runner.run("sft", steps=2, warm=False, out=tmp_path, progress=False, batch_size=4, stop_after=1)
    rdir = tmp_path / r.id
    ckpt = rdir / "stage-1" / "checkpoint.safetensors"
    assert r.status == "interrupted" and ckpt.exists()
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(runner.UsageError, match="checkpoint.safetensors is damaged"):
        runner.run(resume=rdir, progress=False)
    assert Run.model_validate_json((rdir / "run.json").read_text()).status == "interrupted"


def test_a_failing_warm_start_is_recorded_failed(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(runner, "warm_start", boom)
    with pytest.raises(RuntimeError):
        runner.run("grpo", steps=1, out=tmp_path, progress=False)
    (rec,) = tmp_path.glob("*/run.json")
    run = Run.model_validate_json(rec.read_text())
    assert run.status == "failed" and "disk full" in run.message


def test_sigterm_is_an_interruption():
    import sftrl_cli_train

    with pytest.raises(KeyboardInterrupt):
        sftrl_cli_train._terminated(15, None)


def test_copied_run_counted_once_and_runs_show_errors(finished, tmp_path):
    import shutil

    import sftrl_cli
    from catalog.runs import load_runs

    root = tmp_path / "runs"
    shutil.copytree(finished, root / finished.name)
    shutil.copytree(finished, root / "copy")
    runs, bad = load_runs(root)
    assert len(runs) == 1 and any("counted once" in b for b in bad)
    fig = tmp_path / "new" / "dir" / "curves.png"
    res = CliRunner().invoke(sftrl_cli.app, ["runs", "show", str(root / "copy"), "--figure", str(fig)])
    assert res.exit_code == 0 and fig.exists()
    (root / "copy" / "run.json").write_text('{"id": "x", "crea')
    res = CliRunner().invoke(sftrl_cli.app, ["runs", "show", str(root / "copy")])
    assert res.exit_code == 2 and "not a valid run record" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------------------ reasoning-gym
def test_generator_failures_are_skipped():
    pytest.importorskip("reasoning_gym")
    from reference_impls.tasks import make_task

    class Flaky:  # a generator that gives up on every third seed, as countdown does on some
        def __init__(self, ds):
            self.ds = ds

        def __getitem__(self, idx):
            if idx % 3 == 0:
                raise ValueError("Failed to generate valid expression after 100 attempts")
            return self.ds[idx]

    task = make_task("rg:chain_sum", {"eval_size": 6})
    task.train_ds, task.id_eval_ds, task.ood_eval_ds = map(Flaky, (task.train_ds, task.id_eval_ds, task.ood_eval_ds))
    ids = [p.prompt for p in task.eval_sets["in_distribution"]]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert len(task.problems(20, random.Random(0))) == 20

    class Broken(Flaky):
        def __getitem__(self, idx):
            raise ValueError("always")

    task = make_task("rg:chain_sum", {"eval_size": 2})
    task.train_ds = Broken(task.train_ds)
    with pytest.raises(ValueError, match="generator failed"):
        task.problems(2, random.Random(0))


def test_diagnostics_shown_by_runs_show_and_the_explorer(finished):
    from catalog.runs import diagnostics
    from explorer.pages import _runs_table

    run = Run.model_validate_json((finished / "run.json").read_text())
    run.history = [{"step": -1.0, "reward": 9.0}, {"step": 0.0, "reward": 0.5, "entropy": 1.0},
                   {"step": 1.0, "reward": 1.0, "entropy": 0.5}]  # step -1: the curve's start, not a step
    assert diagnostics(run) == [("reward", 1.0, 0.75), ("entropy", 0.5, 0.75)]
    assert "reward 1 / 0.75" in _runs_table([run]) and "entropy 0.5 / 0.75" in _runs_table([run])
