"""Fuzzing the catalogue reader: any input ends in problems naming file/entry/field, or is valid.

Hypothesis generates >= 1,000 catalogues per run (derandomized, so CI sees the same ones): damaged
values in every field, raw YAML snippets (alias bombs, `!!python` tags, impossible dates, deep
nesting, duplicate keys, control characters), broken files (non-UTF-8, FIFOs, directories and
links named *.yaml), and valid random studies that must be accepted. Each check runs in-process
under a time limit: never a traceback, never a hang. Then one targeted test per crash of issue 16.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from catalog.catalog import Catalog, check_catalog
from catalog.export import FORMATS
from sftrl_cli import app
from taxonomy.loading import _BAD_CHARS, Problem
from tests.conftest import MINI

pytestmark = pytest.mark.filterwarnings("ignore")
os.environ["SFTRL_CATALOG_CACHE"] = "off"  # fuzzed catalogues must not fill the user's cache
SETTINGS = {"deadline": None, "derandomize": True, "database": None,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
LIMIT_S = 10  # per catalogue; a hang fails the test instead of stalling CI
runner = CliRunner()
STUDY_FIELDS = ("id", "title", "arxiv", "date", "domains", "base_models", "pipeline", "results", "sources",
                "first_author", "venue", "secondary", "note")


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float = LIMIT_S) -> Iterator[None]:
    def boom(*_: Any) -> None:
        raise Hang(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def catalogue() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "data"
        shutil.copytree(MINI, d)
        yield d


CHECKED: dict[str, int] = {}  # catalogues checked, per test


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def verdict(d: Path) -> list[Problem]:
    """Check a catalogue; on acceptance, also use it the way `sftrl studies` does."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split("[")[0].split(" ")[0]
    CHECKED[test] = CHECKED.get(test, 0) + 1
    with time_limit():
        registry, studies, problems = check_catalog(d)
        for p in problems:
            text = str(p)
            assert p.file and p.message, p
            assert not any(ord(c) < 32 and c not in "\t\n" for c in text), repr(text)  # escaped
            text.encode("utf-8")  # printable: no lone surrogate reaches the terminal
        if not problems:  # accepted: then it is clean text, and usable
            for s in studies:
                assert not any(_BAD_CHARS.search(t) for t in _strings(s.model_dump())), s.id
                assert all(math.isfinite(r.value) for r in s.results), s.id
            cat = Catalog(registry, studies)
            rows = cat.select()
            for fmt in FORMATS.values():
                fmt(rows).encode("utf-8")
    return problems


# ---------------------------------------------------------------------------- 1. damaged values

FIXTURE = yaml.safe_load((MINI / "studies/a.yaml").read_text())["studies"]

nasty_text = st.sampled_from([
    "", " ", "2024-13-45", "2508.05629\n", "２４０２.０３３００", "٢٤٠٢.٠٣٣٠٠", "9912.12345", "0001.00001",
    "\x1b[31mred\x1b[0m", "a\x00b", "\u202eevil", "\ud800", "标题", "Тест", "!!!", "x" * 30_000,
    "https://example.org/ok", "https://exa mple.org", "sft", "grpo", "biology", ".nan", "1e999",
])
values = st.one_of(  # half of the draws are the nasty strings above
    nasty_text, st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
    nasty_text, st.text(max_size=20), st.dates(), st.datetimes(),
    st.lists(st.one_of(nasty_text, st.integers(), st.none()), max_size=3),
    st.dictionaries(st.sampled_from(["method", "source", "x", "value", "benchmark"]), nasty_text, max_size=3)),
)


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


PATHS = [p for p in _paths(FIXTURE) if p] + [(i, f) for i in range(len(FIXTURE)) for f in STUDY_FIELDS]


@settings(max_examples=400, **SETTINGS)
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), values, st.booleans()), min_size=1, max_size=2),
       copy_study=st.booleans(), unicode=st.booleans())
def test_damaged_values_are_reported_or_valid(edits, copy_study, unicode):
    doc = yaml.safe_load((MINI / "studies/a.yaml").read_text())
    for where, value, drop in edits:
        node = doc["studies"]
        try:
            for k in where[:-1]:
                node = node[k]
            if drop and isinstance(node, dict):
                node.pop(where[-1], None)
            elif isinstance(node, dict) or (isinstance(node, list) and where[-1] < len(node)):
                node[where[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    if copy_study:
        doc["studies"].append(doc["studies"][0])
    with catalogue() as d:
        try:
            text = yaml.dump(doc, Dumper=yaml.CSafeDumper, allow_unicode=unicode)
        except UnicodeEncodeError:  # a lone surrogate: only the pure-Python emitter writes it
            text = yaml.safe_dump(doc, allow_unicode=unicode)
        (d / "studies/a.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        problems = verdict(d)
    if copy_study and isinstance(doc["studies"][0], dict):  # a duplicate, if not invalid already
        assert problems
    for p in problems:
        if p.file == "studies/a.yaml":
            assert p.line is not None and (p.entry or p.field or "YAML" in p.message), p


# ---------------------------------------------------------------------------- 2. raw YAML snippets

BOMB = "\n".join(["x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                 + [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)])
SNIPPETS = [
    "    date: 2024-13-45", "    date: 2023-02-30", "    date: 2023-01-01 25:61:00", "    date: !!timestamp soon",
    "    secondary: !!bool maybe", "    title: !!int abc", "    title: !!float x", "    title: !!binary AAAA",
    "    note: !!python/object/apply:os.getcwd []", "    note: !!python/name:os.system", "    note: !custom x",
    "    id: duplicated-id", "    arxiv: \"2301.00099\"", "    domains: &d [math, *d]",
    "    domains: " + "[" * 200 + "]" * 200, "    domains: " + "[" * 5000,
    "    title: \"\\e[31mred\"", "    title: \"\\x00\"", "    title: \"\\ud800\"", "    title: \"\\u202Eevil\"",
    "    results: [{benchmark: b, metric: m, value: .nan}]", "    results: [{benchmark: b, metric: m, value: -.inf}]",
    "    results: [{benchmark: b, metric: m, value: 1e999}]", "    base_models: {a: 1}", "    sources: https://x.org",
    "    pipeline: sft", "    pipeline: []", "    pipeline: [{method: sft, method: grpo}]",
    "    ? [complex, key]\n    : value", "    <<: *nowhere", "\tid: tab", "studies: []", "studies:\n  - id: again",
    "  - *a0", "  - " + "{" * 100 + "}" * 100, "%YAML 1.1\n---", "--- second document", "...",
]


@settings(max_examples=400, **SETTINGS)
@given(snippet=st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=40)), at=st.integers(0, 40),
       bomb=st.booleans(), file=st.sampled_from(["studies/a.yaml", "studies/b.yaml", "methods.yaml",
                                                 "relations.yaml"]))
def test_raw_yaml_damage_is_reported_or_valid(snippet, at, bomb, file):
    with catalogue() as d:
        path = d / file
        lines = path.read_text().splitlines()
        if bomb:
            snippet = snippet.replace("*a0", "*a8")
            lines.insert(0, BOMB)
        lines.insert(min(at, len(lines)), snippet)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        verdict(d)


# ---------------------------------------------------------------------------- 3. broken files


def _break(d: Path, how: str, where: str) -> None:
    path = d / where
    if how == "remove":
        path.unlink()
    elif how == "bytes":
        path.write_bytes(b"studies:\n  - id: \xff\xfe\x00bad\n")
    elif how == "empty":
        path.write_text("")
    elif how in ("null", "[]", "studies:", "methods:", "relations:", "5", "{}"):
        path.write_text(how + "\n")
    elif how == "dir":
        path.unlink()
        path.mkdir()
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif how == "device":
        path.unlink()
        path.symlink_to("/dev/zero")
    elif how == "outside":
        path.unlink()
        outside = d.parent / "outside.yaml"
        shutil.copy(MINI / "studies/a.yaml", outside)
        path.symlink_to(outside)
    elif how == "loop":
        path.unlink()
        path.symlink_to(path)
    elif how == "yml":
        path.rename(path.with_suffix(".yml"))
    elif how == "no-studies":
        shutil.rmtree(d / "studies")
    elif how == "subfolder":
        (d / "studies/more").mkdir()
        shutil.copy(MINI / "studies/a.yaml", d / "studies/more/a.yaml")


HOWS = ["remove", "bytes", "empty", "null", "[]", "studies:", "methods:", "relations:", "5", "{}", "dir", "fifo",
        "device", "outside", "loop", "yml", "no-studies", "subfolder"]


@settings(max_examples=150, **SETTINGS)
@given(how=st.sampled_from(HOWS), where=st.sampled_from(["studies/a.yaml", "methods.yaml", "relations.yaml"]))
def test_broken_files_are_reported(how, where):
    with catalogue() as d:
        _break(d, how, where)
        problems = verdict(d)
    if not (how == "remove" and where != "methods.yaml"):  # relations.yaml is optional; b.yaml remains
        assert problems, (how, where)


# ---------------------------------------------------------------------------- 4. valid catalogues

ids = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4}){0,2}", fullmatch=True)
titles = st.builds("{} {}".format, st.sampled_from(["Fixture", "学习", "Обучение", "تعلم", "Étude", "7B"]),
                   st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs", "P"]), max_size=20))
months = st.sampled_from([f"{y}{m:02d}" for y in (23, 24, 25) for m in range(1, 13)])


@st.composite
def study(draw: st.DrawFn, i: int) -> dict[str, Any]:
    yymm = draw(months)
    s: dict[str, Any] = {
        "id": f"{draw(ids)}-{i}", "title": f"{draw(titles)} {i}", "arxiv": f"{yymm}.{i:05d}",
        "domains": draw(st.lists(st.sampled_from(["general", "math", "agentic", "code"]), min_size=1, max_size=2)),
        "pipeline": [{"method": m} for m in draw(st.lists(st.sampled_from(["sft", "grpo", "dpo", "luffy"]),
                                                          min_size=1, max_size=3))],
        "sources": ["https://example.org/" + draw(ids)],
    }
    if draw(st.booleans()):
        s["results"] = [{"benchmark": draw(titles), "metric": "accuracy",
                         "value": draw(st.floats(-1e6, 1e6, allow_nan=False))}]
    if draw(st.booleans()):
        s["date"] = f"20{yymm[:2]}-{yymm[2:]}-{draw(st.integers(1, 28)):02d}"
    return s


@settings(max_examples=200, **SETTINGS)
@given(data=st.data(), n=st.integers(1, 6))
def test_valid_random_catalogues_are_accepted(data, n):
    studies = [data.draw(study(i)) for i in range(n)]
    with catalogue() as d:
        (d / "studies/b.yaml").unlink()
        text = yaml.dump({"studies": studies}, Dumper=yaml.CSafeDumper, allow_unicode=True)
        (d / "studies/a.yaml").write_text(text, encoding="utf-8")
        problems = verdict(d)
    assert problems == [], [str(p) for p in problems]


# ---------------------------------------------------------------------------- 5. each crash of issue 16


def _with_study(d: Path, extra: str) -> list[Problem]:
    """Add `extra` lines to the first study of a.yaml, replacing its own lines with the same keys
    (but for id and arxiv: adding those makes a duplicate key, on purpose)."""
    path = d / "studies/a.yaml"
    head, first, rest = path.read_text().partition("  - id: s23-sft-a\n")
    body, nxt, tail = rest.partition("  - id: ")
    keys = {line.split(":")[0] for line in extra.splitlines() if line.startswith("    ")} - {"    id", "    arxiv"}
    body = "".join(line for line in body.splitlines(keepends=True) if line.split(":")[0] not in keys)
    path.write_text(head + first + extra + body + nxt + tail, encoding="utf-8")
    return verdict(d)


def _one(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


@pytest.mark.parametrize(("extra", "field", "words"), [
    ("    date: 2023-13-45\n", "date", "not a date/time"),
    ("    date: 2023-01-01 25:00:00\n", "date", "not a date/time"),
    ("    date: !!timestamp soon\n", "date", "not a date/time"),
    ("    venue: !!int abc\n", "venue", "not an int"),
    ("    venue: !!python/object/apply:os.getcwd []\n", "venue", "unsupported YAML tag"),
    ("    id: s23-other\n", "id", "duplicate key 'id'"),
    ("    arxiv: \"2301.00009\"\n", "arxiv", "duplicate key 'arxiv'"),
    ("    venue: \"\\e[31mred\"\n", "venue", "control character U+001B"),
    ("    domains: " + "[" * 40 + "]" * 40 + "\n", "domains", "nested more than"),
    ("    results: [{benchmark: b, metric: m, value: .nan}]\n", "results.0", "not a finite number"),
    ("    results: [{benchmark: b, metric: m, value: .inf}]\n", "results.0", "not a finite number"),
    ("    results: [{benchmark: b, metric: m, value: 1e999}]\n", "results.0", "not a finite number"),
])
def test_each_bad_value_names_file_entry_field(mini_dir, extra, field, words):
    p = _one(_with_study(mini_dir, extra))
    assert (p.file, p.entry, p.field.split(".…")[0][: len(field)]) == ("studies/a.yaml", "s23-sft-a", field), str(p)
    assert words in p.message and p.line is not None


def test_alias_bomb_in_domains_is_refused_quickly(mini_dir):
    bombs = "".join(f"      {line}\n" for line in BOMB.splitlines())
    p = _one(_with_study(mini_dir, f"    bombs:\n{bombs}    domains: *a8\n"))
    assert p.entry == "s23-sft-a" and "alias" in p.message


@pytest.mark.parametrize("arxiv", ["２３０１.００００１", "٢٣٠١.٠٠٠٠١", "9912.12345", "0612.1234", "2301.00001\\n"])
def test_impossible_arxiv_ids(mini_dir, arxiv):
    a = mini_dir / "studies/a.yaml"
    a.write_text(a.read_text().replace('arxiv: "2301.00001"', f'arxiv: "{arxiv}"'), encoding="utf-8")
    p = _one(verdict(mini_dir))
    assert (p.entry, p.field) == ("s23-sft-a", "arxiv"), str(p)


def test_citation_with_a_trailing_newline(mini_dir):
    r = mini_dir / "relations.yaml"
    r.write_text(r.read_text().replace('citation: "2503.14476"', 'citation: "2503.14476\\n"'))
    assert _one(verdict(mini_dir)).field == "citation"


def test_second_top_level_studies_key_is_an_error(mini_dir):
    a = mini_dir / "studies/a.yaml"
    a.write_text(a.read_text() + (MINI / "studies/b.yaml").read_text())
    p = _one(verdict(mini_dir))
    assert p.file == "studies/a.yaml" and "duplicate top-level key 'studies:'" in p.message and p.line > 2


@pytest.mark.parametrize("text", ["", "null\n", "[]\n", "methods: []\n", "methods:\n"])
def test_empty_method_registry_is_an_error(mini_dir, text):
    (mini_dir / "methods.yaml").write_text(text)
    problems = verdict(mini_dir)
    assert problems[0].file == "methods.yaml" and not any("Traceback" in str(p) for p in problems)
    assert runner.invoke(app, ["validate", "--data", str(mini_dir)]).exit_code == 1


@pytest.mark.parametrize("how", ["fifo", "dir", "device", "outside", "loop"])
def test_files_that_are_not_regular_are_refused_without_blocking(mini_dir, how):
    _break(mini_dir, how, "studies/b.yaml")
    p = _one(verdict(mini_dir))
    assert p.file == "studies/b.yaml" and "this file" in p.message


@pytest.mark.parametrize("how", ["yml", "no-studies", "subfolder"])
def test_ignored_files_are_named(mini_dir, how):
    _break(mini_dir, how, "studies/b.yaml")
    p = _one(verdict(mini_dir))
    assert p.file.startswith("studies/") and ("not read" in p.message or "not found" in p.message)


def test_non_utf8_names_the_line(mini_dir):
    (mini_dir / "studies/b.yaml").write_bytes(b"studies:\n  - id: caf\xe9\n")
    assert "line 2" in _one(verdict(mini_dir)).message


def test_titles_in_non_latin_scripts_are_not_duplicates(mini_dir):
    a = mini_dir / "studies/a.yaml"
    text = a.read_text().replace('"Fixture study one"', '"监督微调与强化学习"').replace('"Fixture study two"', '"Обучение с подкреплением"')
    a.write_text(text, encoding="utf-8")
    assert verdict(mini_dir) == []
    a.write_text(text.replace('"Обучение с подкреплением"', '"?!"'), encoding="utf-8")
    assert _one(verdict(mini_dir)).field == "title"


def test_dense_relation_graph_is_checked_in_linear_time(mini_dir):
    ids = ["reinforce", "sft", "ppo", "grpo", "dapo", "dpo", "dft", "luffy"]
    edges = [f'  - {{source: {a}, target: {b}, kind: extends, note: x, citation: "2402.03300"}}'
             for a in ids for b in ids if a != b]  # every pair both ways: 8! / k cycles if enumerated
    (mini_dir / "relations.yaml").write_text("relations:\n" + "\n".join(edges) + "\n")
    p = _one(verdict(mini_dir))
    assert "cycle" in p.message and p.entry.count("->") >= 1


def test_validate_prints_no_traceback_and_no_raw_escape(mini_dir):
    _with_study(mini_dir, "    date: 2023-13-45\n    venue: \"\\e[31mred\"\n")
    r = runner.invoke(app, ["validate", "--data", str(mini_dir)])
    assert r.exit_code == 1 and "Traceback" not in r.output and "\x1b" not in r.output
    assert "studies/a.yaml:" in r.output and "[s23-sft-a] date" in r.output


def test_a_huge_catalogue_file_is_refused(mini_dir, monkeypatch):
    from taxonomy import loading

    monkeypatch.setattr(loading, "MAX_FILE_BYTES", 100)
    problems = verdict(mini_dir)
    assert {p.file for p in problems} >= {"studies/a.yaml", "methods.yaml"}
    assert all("larger than" in p.message for p in problems)


def test_finite_check_is_for_reported_numbers_only():
    from taxonomy.schema import Origin, Result

    assert math.isnan(Result(benchmark="b", metric="m", value=float("nan"), origin=Origin.measured).value)


def test_at_least_1000_catalogues_were_generated():
    fuzz = ("test_damaged_values_are_reported_or_valid", "test_raw_yaml_damage_is_reported_or_valid",
            "test_broken_files_are_reported", "test_valid_random_catalogues_are_accepted")
    if not all(CHECKED.get(t) for t in fuzz):
        pytest.skip("run with the whole file to count")
    assert sum(CHECKED[t] for t in fuzz) >= 1000, CHECKED


def test_many_entries_aliasing_one_big_entry_are_refused_quickly(mini_dir):
    big = "[" + ", ".join(["x"] * 15_000) + "]"
    entries = "\n".join(["  - *big"] * 5_000)  # 75 million values if expanded; 30 kB of text
    (mini_dir / "studies/b.yaml").write_text(f"studies:\n  - &big {big}\n{entries}\n")
    problems = verdict(mini_dir)
    assert any("alias bomb" in p.message for p in problems) and len(problems) < 100


def test_cache_switches_are_apart(tmp_path, monkeypatch):
    """SFTRL_CACHE=off switches the catalogue cache off and never makes a model folder named off/;
    SFTRL_CACHE=DIR holds both caches, the catalogue's under DIR/catalog."""
    from reference_impls.core.model import cache_dir
    from taxonomy import loading

    monkeypatch.delenv("SFTRL_CATALOG_CACHE", raising=False)
    monkeypatch.setenv("SFTRL_CACHE", "off")
    assert loading.catalog_cache_folder() is None and cache_dir().name == "sftrl"
    monkeypatch.setenv("SFTRL_CACHE", str(tmp_path))
    assert loading.catalog_cache_folder() == tmp_path / "catalog" and cache_dir() == tmp_path
    monkeypatch.setenv("SFTRL_CATALOG_CACHE", "off")
    assert loading.catalog_cache_folder() is None and cache_dir() == tmp_path


def test_cache_is_used_and_never_stale(mini_dir, tmp_path, monkeypatch):
    from taxonomy import loading

    cache = tmp_path / "cache"
    monkeypatch.setenv("SFTRL_CATALOG_CACHE", str(cache))
    monkeypatch.setattr(loading, "CACHE_MIN_CHARS", 0)  # cache even the small fixture files
    first = check_catalog(mini_dir)
    assert len(list(cache.glob("*.pickle"))) == 4 and first[2] == []
    again = check_catalog(mini_dir)
    assert [s.model_dump() for s in again[1]] == [s.model_dump() for s in first[1]]
    _with_study(mini_dir, "    date: 2023-13-45\n")  # an edit: a new key, so a fresh parse
    p = _one(check_catalog(mini_dir)[2])
    assert p.field == "date" and len(list(cache.glob("*.pickle"))) == 5
    cache.chmod(0o777)  # a cache folder others may write to is not trusted
    try:
        assert loading._Cache.open("x", "n", "studies", dict) is None
    finally:
        cache.chmod(0o700)


# ---------------------------------------------------------------------------- 6. the census corpus

json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
                                     st.sampled_from(["2024-05-01", "2024-13", "２０２４-０５", "gsm8k " * 6])),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.sampled_from(["id", "date", "text"]), inner)),
                           max_leaves=8)


@settings(max_examples=100, **SETTINGS)
@given(lines=st.lists(st.one_of(json_values.map(__import__("json").dumps), st.text(max_size=30),
                                st.just("[" * 5000)), max_size=5))
def test_corpus_lines_are_read_or_named(tmp_path_factory, lines):
    from catalog import trends

    path = tmp_path_factory.mktemp("c") / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    with time_limit():
        try:
            papers = trends.read_corpus(path)
        except ValueError as e:
            assert str(path) in str(e)
            return
        trends.census(papers, k=1, partial_year=2025)
