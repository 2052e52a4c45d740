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
