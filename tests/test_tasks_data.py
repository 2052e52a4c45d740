"""The Task interface on three kinds of task: addition (plain and carry-by-carry), reasoning-gym
generators, a user's dataset in TRL's columns; rewards; every bad-input case as a clear error."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import reference_impls.testing  # noqa: F401  (HF offline, 1 torch thread)
from reference_impls import runner
from reference_impls.tasks import UnknownTask, make_task
from reference_impls.tasks.addition import Addition, Problem
from reference_impls.tasks.base import MissingSignal
from reference_impls.tasks.dataset import DataError
from reference_impls.tasks.rewards import RewardError, exact, make_reward, math_reward
from sftrl_cli import app
from taxonomy.schema import Run

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sums(n: int = 40, seed: int = 0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(n)]


@pytest.fixture
def std(tmp_path) -> Path:
    return write_jsonl(tmp_path / "std.jsonl", [
        {"prompt": f"{a}+{b}=", "completion": str(a + b), "chosen": str(a + b),
         "rejected": str(a + b + 1), "answer": str(a + b)} for a, b in sums()])


@pytest.fixture
def conv(tmp_path) -> Path:
    return write_jsonl(tmp_path / "conv.jsonl", [
        {"messages": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}]}
        for a, b in sums()])


# ------------------------------------------------------------------ addition


def test_addition_chain_of_thought_steps_and_reward():
    p = Problem(47, 85, cot=True)
    assert p.steps == ("7+5=12\n", "4+8+1=13\n", "132") and p.solution == "".join(p.steps)
    assert Addition(cot=True).reward(p, p.solution) == 1.0
    assert Addition(cot=True).reward(p, "7+5=12\n4+8+1=13\n133") == 0.0
    assert Problem(47, 85).steps == ("1", "3", "2")
    wrong = Addition(cot=True).wrong_completion(p, random.Random(0))
    assert wrong.startswith("7+5=12\n4+8+1=13\n") and Addition(cot=True).reward(p, wrong) == 0.0


def test_expert_solutions_are_for_the_prompts_sampled():
    t = Addition()
    for p in t.prompts(10, random.Random(1)):
        assert t.reward(p, p.solution) == 1.0


# ------------------------------------------------------------------ reasoning-gym


def test_reasoning_gym_task_splits_scorer_and_signals():
    t = make_task("rg:basic_arithmetic", {"eval_size": 12})
    idd, ood = t.eval_sets["in_distribution"], t.eval_sets["out_of_distribution"]
    assert len(idd) == len(ood) == 12
    # the OOD knob: more terms (ID 2-3 terms, OOD 5-6)
    n_ops = lambda p: sum(p.meta["question"].count(c) for c in "+-*/")  # noqa: E731
    assert max(map(n_ops, idd)) < min(map(n_ops, ood)) + 2
    p = t.prompts(1, random.Random(0))[0]
    assert t.reward(p, p.solution) == 1.0 and t.reward(p, p.solution + "1") < 1.0
    assert t.prompts(3, random.Random(5)) == t.prompts(3, random.Random(5))
    assert not {q.prompt for q in t.problems(200, random.Random(0))} & {q.prompt for q in idd}
    _, chosen, rejected = t.preference_pairs(1, random.Random(0))[0]
    assert chosen != rejected


def test_reasoning_gym_options_and_unknown_names():
    t = make_task("rg:countdown", {"min_numbers": 3, "max_numbers": 3, "eval_size": 2})
    assert len(t.prompts(1, random.Random(0))[0].meta["metadata"]["numbers"]) == 3
    with pytest.raises(UnknownTask, match="unknown reasoning-gym generator 'nosuch'"):
        make_task("rg:nosuch")
    with pytest.raises(ValueError, match="no option"):
        make_task("rg:countdown", {"min_numberz": 3})
    with pytest.raises(UnknownTask, match="known tasks: addition"):
        make_task("ADDITION")


# ------------------------------------------------------------------ user data


def test_dataset_signals_and_split(std):
    t = make_task(data=std)
    assert {"demonstrations", "preference_pairs", "unpaired_labels", "verifiable_reward",
            "expert_solutions"} <= t.provides
    assert len(t.eval_sets["in_distribution"]) == 4  # 10 % of 40 held out
    train_prompts = {p.prompt for p in t.problems(500, random.Random(0))}
    assert not train_prompts & {p.prompt for p in t.eval_sets["in_distribution"]}
    p = t.prompts(1, random.Random(0))[0]
    assert t.reward(p, p.answer) == 1.0 and t.reward(p, " " + p.answer.upper() + ". ") == 1.0
    pr, chosen, rejected = t.preference_pairs(1, random.Random(0))[0]
    assert int(rejected) == int(chosen) + 1


def test_conversational_rows_render_with_a_template(conv):
    t = make_task(data=conv)
    p = t.prompts(1, random.Random(0))[0]
    assert p.prompt.startswith("user: ") and p.prompt.endswith("assistant: ")
    with pytest.raises(MissingSignal, match="preference_pairs: columns prompt \\+ chosen \\+ rejected"):
        t.require({"preference_pairs"}, "dpo")


@pytest.mark.parametrize("method", ["sft", "dpo", "grpo", "ppo"])
def test_each_core_method_runs_on_a_user_jsonl(method, std, conv, tmp_path):
    for data in ([std] if method == "dpo" else [std, conv]):
        r = runner.run(method, data=str(data), steps=2, out=tmp_path, progress=False, batch_size=8, warm=False)
        assert r.status == "finished" and r.results


def test_pipeline_on_reasoning_gym_is_one_run_with_two_stages(tmp_path):
    r = runner.run("sft,grpo", task="rg:basic_arithmetic", task_options={"eval_size": 8}, steps=2,
                   out=tmp_path, progress=False, batch_size=16)
    assert r.pipeline.method_ids() == ["sft", "grpo"]
    Run.model_validate_json((tmp_path / r.id / "run.json").read_text())
    assert {x.note.split(";")[0] for x in r.results} == {"stage 1 (sft)", "stage 2 (grpo)"}


# ------------------------------------------------------------------ bad data, bad rewards


@pytest.mark.parametrize(("lines", "match"), [
    (['{"prompt": "1+1=", "completion": "2"}', '{"prompt": "2+2=", '], r"bad.jsonl:2: not valid JSON"),
    (['{"completion": "2"}'], r"bad.jsonl:1: prompt: missing \(columns here: completion\)"),
    (['{"prompt": {"text": "1+1="}, "completion": "2"}'], r"bad.jsonl:1: prompt: expected a string or a non-empty list"),
    (['{"prompt": "1+1=", "completion": "2", "label": "yes"}'], r"bad.jsonl:1: label: expected true/false"),
    (['[1, 2]'], r"bad.jsonl:1: expected a JSON object per line"),
    (['{"messages": [{"role": "user", "content": "hi"}]}'], r"bad.jsonl:1: messages: the last message must be the assistant's"),
])
def test_bad_rows_are_reported_with_file_row_and_column(tmp_path, lines, match):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=match):
        make_task(data=path)


def test_every_bad_row_at_once_and_other_formats(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"completion": "2"}\n{"prompt": [3]}\n')
    with pytest.raises(DataError) as e:
        make_task(data=path)
    assert len(e.value.problems) == 2
    csv = tmp_path / "d.csv"
    csv.write_text("prompt,completion\n1+1=,2\n2+2=,4\n")
    assert make_task(data=csv).prompts(1, random.Random(0))[0].prompt in ("1+1=", "2+2=")
    with pytest.raises(DataError, match="unknown format '.txt'"):
        (tmp_path / "d.txt").write_text("x")
        make_task(data=tmp_path / "d.txt")
    with pytest.raises(DataError, match="no such file"):
        make_task(data=tmp_path / "missing.jsonl")


def test_rewards(tmp_path, monkeypatch):
    p = Problem(1, 2)
    assert exact(p, " 3. ") == 1.0 and exact(p, "4") == 0.0
    q = make_task(data=write_jsonl(tmp_path / "m.jsonl", [{"prompt": "x", "answer": "\\frac{1}{2}"}] * 2)).prompts(1, random.Random(0))[0]
    assert math_reward(q, "the answer is $0.5$") == 1.0 and math_reward(q, "$0.4$") == 0.0
    (tmp_path / "myrewards.py").write_text(
        "def length(prompt, completion, **cols):\n    return float(len(completion))\n"
        "def boom(prompt, completion, **cols):\n    raise ValueError('bad row')\n"
        "def text(prompt, completion, **cols):\n    return 'high'\n")
    monkeypatch.chdir(tmp_path)
    row = make_task(data=write_jsonl(tmp_path / "r.jsonl", [{"prompt": "x", "answer": "y"}] * 3)).prompts(1, random.Random(0))[0]
    assert make_reward("myrewards:length")(row, "abc") == 3.0
    with pytest.raises(RewardError, match=r"raised on r.jsonl:\d: ValueError: bad row"):
        make_reward("myrewards:boom")(row, "abc")
    with pytest.raises(RewardError, match="returned 'high'.*expected a finite number"):
        make_reward("myrewards:text")(row, "abc")
    with pytest.raises(ValueError, match="has no function .nosuch."):
        make_reward("myrewards:nosuch")


def test_a_failing_reward_stops_the_run_with_the_row(tmp_path, std, monkeypatch):
    (tmp_path / "rw.py").write_text("def boom(prompt, completion, **cols):\n    raise KeyError('x')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RewardError, match="std.jsonl"):
        runner.run("grpo", data=str(std), reward="rw:boom", steps=2, out=tmp_path / "runs",
                   progress=False, batch_size=8, warm=False)
    (saved,) = runner.list_runs(tmp_path / "runs")
    assert saved.status == "failed" and "std.jsonl" in saved.message


@pytest.mark.parametrize(("args", "match"), [
    (["sft", "--task", "ADDITION"], "unknown task 'ADDITION'; known tasks"),
    (["sft", "--task", "rg:nosuch"], "unknown reasoning-gym generator"),
    (["sft", "--steps", "0"], "--steps must be at least 1"),
    (["sft", "--threads", "0"], "--threads must be at least 1"),
    (["sft", "--seed", "99999999999999"], "--seed must be between 0 and"),
    (["sft", "--device", "cuda"], "sees no CUDA device"),
    (["sft", "--model", "nosuch-model-xyz", "--steps", "1"], "cannot load it"),
    (["sft", "--set", "nosuch=1"], "unknown sft option 'nosuch'"),
    (["sft", "--set", "lr=abc"], "option 'lr' expects a number"),
    (["nosuch"], "no reference implementation for 'nosuch'"),
])
def test_cli_user_mistakes_are_usage_errors_not_tracebacks(args, match, tmp_path):
    res = CliRunner().invoke(app, ["run", *args, "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    assert match in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)  # no traceback
    assert "Traceback" not in res.output
    assert not list((tmp_path / "runs").glob("*/run.json"))  # nothing trained, nothing recorded


def test_cli_out_is_checked_before_training(tmp_path):
    f = tmp_path / "afile"
    f.write_text("")
    res = CliRunner().invoke(app, ["run", "sft", "--out", str(f)])
    assert res.exit_code == 2 and "is a file, not a folder" in res.output


def test_cli_method_help_lists_its_options():
    """`sftrl run grpo --help` (a subprocess: main() adds the method's options after typer's help)."""
    res = subprocess.run([sys.executable, "-c", "from sftrl_cli import main; main()", "run", "grpo", "--help"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    assert "options of grpo" in res.stdout and "eps_high" in res.stdout and "clip range above 1" in res.stdout


def test_cli_pipeline_from_a_yaml_file(tmp_path):
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("stages:\n  - {method: sft, steps: 3}\n  - {method: grpo, lr: 1.0e-4, steps: 2, batch_size: 16}\n"
                   "task: addition\ntask_options: {cot: true}\n")
    res = CliRunner().invoke(app, ["run", "--config", str(cfg), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    (run,) = runner.list_runs(tmp_path / "runs")
    got = [(s.method, s.hyperparameters["steps"], s.hyperparameters["lr"]) for s in run.pipeline.stages]
    assert got == [("sft", 3, 3e-3), ("grpo", 2, 1e-4)] and run.config["task_options"] == {"cot": True}
    bad = tmp_path / "bad.yaml"
    bad.write_text("stagez: []\n")
    res = CliRunner().invoke(app, ["run", "--config", str(bad)])
    assert res.exit_code == 2 and "unknown key(s) ['stagez']" in res.output


def test_a_learned_reward_trains_but_the_task_scorer_evaluates(tmp_path):
    """`sftrl run rm` writes a reward model; `--reward model:PATH` trains on its score, while the
    reported accuracy stays the task's own scorer (exact match), not the reward model's."""
    r = runner.run("rm", steps=1, out=tmp_path, progress=False, batch_size=8)
    path = tmp_path / r.id / f"stage-{len(r.pipeline.stages)}" / "reward_model"
    assert (path / "config.json").exists() and {x.metric for x in r.results} == {"rm_accuracy", "rm_margin"}
    task = make_task("addition", reward=f"model:{path}")
    p = task.prompts(1, random.Random(0))[0]
    assert task.eval_reward(p, p.solution) == 1.0 and task.eval_reward(p, "0") == 0.0
    assert task.reward(p, p.solution) not in (0.0, 1.0)  # a learned scalar score
    g = runner.run("grpo", reward=f"model:{path}", steps=1, out=tmp_path, progress=False, batch_size=16)
    acc = [x.value for x in g.results if x.metric == "accuracy"]
    assert all(0.0 <= v <= 100.0 for v in acc) and acc[0] > 0  # exact match of the warm base, not RM scores
