"""Every kind of bad data is reported, located, all at once, and never as a traceback."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from catalog.catalog import Catalog, check_catalog
from sftrl_cli import app
from taxonomy.loading import DataError
from tests.conftest import MINI

runner = CliRunner()


def _problems(d: Path):
    return check_catalog(d)[2]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_fixture_is_clean():
    assert _problems(MINI) == []


def test_yaml_syntax_error_has_file_and_line(mini_dir):
    _edit(mini_dir / "studies/b.yaml", "  - id: s25-sft\n", "  - id: s25-sft\n   bad: [unclosed\n")
    (p,) = _problems(mini_dir)
    assert p.file == "studies/b.yaml" and p.line is not None and "YAML syntax error" in p.message


def test_all_problems_reported_together_with_location(mini_dir):
    a = mini_dir / "studies/a.yaml"
    _edit(a, "    domains: [math]\n    base_models: [Llama-2-7B]", "    domains: [math]\n    colour: red\n    base_models: [Llama-2-7B]")
    _edit(a, 'arxiv: "2305.00002"', "arxiv: 2305.00002")  # unquoted: reads as a float
    _edit(a, "{method: grpo,", "{method: gpro,")  # unknown method
    _edit(a, "value: 50.0", "value: high")  # wrong type
    _edit(mini_dir / "studies/b.yaml", 'arxiv: "2501.00008"', 'arxiv: "2501.0008"')  # malformed
    _edit(mini_dir / "studies/b.yaml", 'arxiv: "2503.00007"', 'arxiv: "2503.00007"\n    date: 2024-03-01')
    probs = _problems(mini_dir)
    by = {(p.entry, p.field): p for p in probs}
    assert by[("s23-sft-a", "colour")].message.startswith("unknown field")
    assert by[("s23-sft-a", "colour")].line == 7  # the offending line itself
    assert "quote arXiv ids" in by[("s23-sft-b", "arxiv")].message
    gpro = by[("s24-rl", "pipeline.stages.0.method")]
    assert "did you mean 'grpo'" in gpro.message and gpro.file == "studies/a.yaml"
    assert "valid number" in by[("s23-sft-a", "results.0.value")].message
    assert ("s25-sft", "arxiv") in by
    assert "contradicts arXiv id" in next(p.message for p in probs if p.entry == "s25-rl-dapo")
    assert len(probs) == 6
    # nothing half-loaded
    try:
        Catalog.load(mini_dir)
    except DataError as e:
        assert len(e.problems) == 6
    else:
        raise AssertionError("Catalog.load accepted bad data")


def test_duplicates_by_id_arxiv_and_title(mini_dir):
    b = mini_dir / "studies/b.yaml"
    b.write_text(b.read_text() + (
        '  - {id: s23-sft-a, title: "Another", arxiv: "2502.00011", domains: [math], pipeline: [{method: sft}], sources: ["https://x.org"]}\n'
        '  - {id: dup-arxiv, title: "Another two", arxiv: "2301.00001", domains: [math], pipeline: [{method: sft}], sources: ["https://x.org"]}\n'
        '  - {id: dup-title, title: "fixture study ONE!", arxiv: "2502.00012", domains: [math], pipeline: [{method: sft}], sources: ["https://x.org"]}\n'))
    fields = sorted(p.field for p in _problems(mini_dir))
    assert fields == ["arxiv", "id", "title"]


def test_unknown_relation_end_and_duplicate_method(mini_dir):
    _edit(mini_dir / "relations.yaml", "{source: dapo,", "{source: dappo,")
    m = mini_dir / "methods.yaml"
    m.write_text(m.read_text() + "  - {<<: *base, id: ppo}\n")
    msgs = sorted(p.message for p in _problems(mini_dir))
    assert any("unknown method 'dappo'" in s and "dapo" in s for s in msgs)
    assert any(s.startswith("duplicate id") for s in msgs)


def test_cli_validate_exit_codes(mini_dir):
    ok = runner.invoke(app, ["validate", "--data", str(mini_dir)])
    assert ok.exit_code == 0 and "8 studies" in ok.output
    _edit(mini_dir / "studies/a.yaml", "{method: grpo,", "{method: gpro,")
    bad = runner.invoke(app, ["validate", "--data", str(mini_dir)])
    assert bad.exit_code == 1
    assert "studies/a.yaml:" in bad.output and "s24-rl" in bad.output and "Traceback" not in bad.output
    usage = runner.invoke(app, ["studies", "--data", str(mini_dir), "--year", "soon"])
    assert usage.exit_code == 2


# ---------------------------------------------------------------------------- property-based

_STUDIES = yaml.safe_load((MINI / "studies/a.yaml").read_text())["studies"]
_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 3000), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.text(max_size=5), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


_ALL_PATHS = [p for p in _paths(_STUDIES) if p]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(_ALL_PATHS), value=_values, drop=st.booleans(), text_noise=st.text(max_size=20))
def test_random_mutations_never_raise(tmp_path_factory, where, value, drop, text_noise):
    d = tmp_path_factory.mktemp("m")
    import shutil

    shutil.copytree(MINI, d, dirs_exist_ok=True)
    doc = yaml.safe_load((MINI / "studies/a.yaml").read_text())
    node = doc["studies"]
    for k in where[:-1]:
        node = node[k]
    if drop and isinstance(node, dict):
        node.pop(where[-1], None)
    else:
        node[where[-1]] = value
    text = yaml.safe_dump(doc, sort_keys=False)
    if text_noise:  # raw-text damage too, to reach the YAML parser's error paths
        cut = len(text) // 2
        text = text[:cut] + text_noise + text[cut:]
    (d / "studies/a.yaml").write_text(text)
    _, _, problems = check_catalog(d)  # must not raise
    for p in problems:
        assert str(p)  # every problem renders
    result = runner.invoke(app, ["validate", "--data", str(d)])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
