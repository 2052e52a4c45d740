"""The CLI: every command, formats, exit codes, --help with an example."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sftrl_cli import app
from tests.conftest import MINI

runner = CliRunner()
D = ["--data", str(MINI)]


def run(*args: str, code: int = 0):
    r = runner.invoke(app, list(args))
    assert r.exit_code == code, r.output
    return r.output


def test_methods_list_and_show():
    out = run("methods", "list", "--paradigm", "hybrid", "-f", "csv", *D)
    assert out.splitlines()[0].startswith("id,name,paradigm")
    assert {line.split(",")[0] for line in out.splitlines()[1:]} == {"dft", "luffy"}
    out = run("methods", "show", "grpo", *D)
    assert "grpo --removes_component--> ppo" in out and "dapo --modifies--> grpo" in out
    assert "did you mean 'grpo'" in run("methods", "show", "grp", *D, code=2)


def test_graph_commands(tmp_path):
    out = run("graph", "lineage", "dft", *D)
    assert "reinforce" in out and "sft" in out and "2 method(s)" in out
    assert "luffy" in run("graph", "lineage", "grpo", "--descendants", *D)
    assert "dft --rectifies--> sft" in run("graph", "path", "dft", "dapo", *D)
    out = run("graph", "neighbours", "ppo", "--kind", "removes_component", "-f", "csv", *D)
    assert out.splitlines()[1:] == ["grpo,removes_component,ppo,no critic,2402.03300"]
    run("graph", "neighbours", "ppo", "--kind", "drops", *D, code=2)
    f = tmp_path / "g.json"
    run("graph", "export", "-f", "json", "-o", str(f), *D)
    assert len(json.loads(f.read_text())["nodes"]) == 8
    assert "hybrid" in run("graph", "export", "-f", "mermaid", "--paradigm", "hybrid", *D)
    run("graph", "export", "-f", "png", *D, code=2)


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown", "bibtex"])
def test_studies_formats(fmt):
    out = run("studies", "--domain", "math", "--year", "2025", "-f", fmt, *D)
    assert "s25-hybrid-luffy" in out and "s24-rl" not in out


def test_studies_results_and_env_var(monkeypatch):
    monkeypatch.setenv("SFTRL_DATA", str(MINI))
    out = run("studies", "--method", "grpo", "--results", "-f", "csv")
    assert out.count("\n") == 3 and "MATH" in out


def test_usage_errors_exit_2():
    run("studies", "--paradigm", "semi", *D, code=2)
    run("studies", "--method", "nope", *D, code=2)
    run("validate", "--data", "/nonexistent/dir", code=2)


@pytest.mark.parametrize("cmd", [["studies"], ["validate"], ["methods", "list"], ["methods", "show"],
                                 ["graph", "lineage"], ["graph", "neighbours"], ["graph", "path"], ["graph", "export"], ["trends"]])
def test_every_command_has_help_with_example(cmd):
    out = run(*cmd, "--help")
    assert "Example" in out and "sftrl " in out


@pytest.mark.parametrize("args", [
    ["methods", "list", "--format", "bibtex"], ["methods", "list", "--paradigm", "bogus"],
    ["methods", "list", "--family", "bogus"], ["graph", "export", "-f", "dot", "--out", "/"],
    ["graph", "export", "--paradigm", "bogus"], ["studies", "--source", "bogus"], ["studies", "--year", "1990"],
    ["studies", "--descendants"], ["studies", "--results", "-f", "bibtex"], ["trends", "--k", "-1"],
    ["trends", "--year", "1990"], ["studies", "--data", "/nonexistent/catalogue"],
])
def test_misuse_is_one_line_and_exit_2(args, tmp_path):
    r = runner.invoke(app, [*args, *(D if "--data" not in args else [])])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output


def test_unknown_filter_values_list_the_known_ones():
    assert "expected one of benchmark, open_weight_model" in run("studies", "--source", "bogus", *D, code=2)
    assert "expected one of sft, rl, hybrid" in run("methods", "list", "--paradigm", "bogus", *D, code=2)
    assert "the catalogue has studies from 2023, 2024, 2025" in run("studies", "--year", "1990", *D, code=2)


def test_failed_trends_leaves_no_folder(tmp_path):
    out = tmp_path / "new" / "trends"
    run("trends", "--year", "1990", "--out", str(out), *D, code=2)
    assert not (tmp_path / "new").exists()
    f = tmp_path / "a-file"
    f.write_text("x")
    assert "not a folder" in run("trends", "--out", str(f), *D, code=2)


def test_runs_results_over_a_broken_catalogue_is_exit_1(mini_dir, tmp_path, monkeypatch):
    from taxonomy.schema import Run

    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    record = Run(id="r1", created="2026-01-01T00:00:00", task="addition", model="tiny",
                 pipeline=[{"method": "sft"}], config={}, seed=0, device="cpu", hardware="cpu", versions={},
                 results=[{"benchmark": "b", "metric": "accuracy", "value": 1.0, "origin": "measured"}])
    (run_dir / "run.json").write_text(record.model_dump_json())
    (mini_dir / "methods.yaml").write_text("methods: []\n")
    monkeypatch.setenv("SFTRL_DATA", str(mini_dir))
    r = runner.invoke(app, ["runs", "--results", "--out", str(tmp_path / "runs")])
    assert r.exit_code == 1 and "methods.yaml" in r.output and "Traceback" not in r.output, r.output
