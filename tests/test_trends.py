"""The numbers behind every trend figure, on the fixture catalogue, against hand-computed answers.

Fixture (tests/fixtures/mini/studies): 2023: sft, sft, sft->dpo | 2024: grpo, sft->ppo |
2025: luffy, dapo, sft.
"""

from __future__ import annotations

import math

import pytest

from catalog import Catalog
from catalog import trends as T
from tests.conftest import FIXTURES, MINI


@pytest.fixture(scope="module")
def studies():
    return Catalog.load(MINI).frame()


def cell(df, **kw):
    for k, v in kw.items():
        df = df[df[k] == v]
    assert len(df) == 1, kw
    return df.iloc[0]


def test_wilson_matches_textbook_values():
    lo, hi = T.wilson(2, 3)  # p = 2/3, n = 3, z = 1.96
    assert lo == pytest.approx(0.2077, abs=1e-4) and hi == pytest.approx(0.9385, abs=1e-4)
    assert T.wilson(0, 10)[0] == 0.0 and T.wilson(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in T.wilson(0, 0))


def test_paradigm_shares(studies):
    t = T.paradigm_shares(studies)
    assert len(t) == 9  # full grid: 3 years x 3 paradigms
    r = cell(t, year=2023, paradigm="sft")
    assert (r["count"], r["n"]) == (2, 3) and r["share"] == pytest.approx(200 / 3)
    assert r["survey"] == 73.3
    assert cell(t, year=2023, paradigm="rl")["count"] == 0
    assert cell(t, year=2024, paradigm="hybrid")["share"] == 50.0
    assert cell(t, year=2025, paradigm="hybrid")["count"] == 1  # luffy alone is hybrid
    assert t.groupby("year")["share"].sum().round(6).eq(100).all()


def test_paradigm_shares_by_domain(studies):
    t = T.paradigm_shares(studies, by_domain=True)
    r = cell(t, year=2025, domain="code", paradigm="rl")
    assert (r["count"], r["n"]) == (1, 2)
    assert cell(t, year=2023, domain="general", paradigm="hybrid")["count"] == 1


def test_source_shares_count_distinct_study_source_mentions(studies):
    t = T.source_shares(studies)
    # 2023 mentions: s23-sft-a {proprietary, benchmark}, s23-sft-b {human_web}, s23-hybrid {proprietary}
    r = cell(t, year=2023, source="proprietary_model")
    assert (r["count"], r["n"]) == (2, 4) and r["share"] == 50.0 and r["survey"] == 32.2
    assert cell(t, year=2023, source="human_web")["count"] == 1
    # 2024: s24-rl {benchmark} (self_generated/rule_based are not Figure-2 kinds), s24-hybrid {open_weight}
    assert cell(t, year=2024, source="benchmark")["n"] == 2
    assert cell(t, year=2025, source="open_weight_model")["count"] == 2


def test_algorithm_adoption_keeps_rl_and_hybrid_methods(studies):
    mp = {m.id: str(m.paradigm) for m in Catalog.load(MINI).registry.methods.values()}
    t = T.algorithm_adoption(studies, method_paradigm=mp)
    got = {(r.year, r.method): r.studies for r in t.itertuples()}
    assert got == {(2023, "dpo"): 1, (2024, "grpo"): 1, (2024, "ppo"): 1, (2025, "dapo"): 1, (2025, "luffy"): 1}


def test_domain_paradigm_crosstab(studies):
    t = T.domain_paradigm(studies)
    assert list(t.columns) == ["sft", "rl", "hybrid"]
    assert t.loc["math"].tolist() == [1, 1, 1]
    assert t.loc["code"].tolist() == [1, 1, 0]
    assert int(t.to_numpy().sum()) == 8


def test_base_model_families(studies):
    assert T.model_family("Qwen2.5-Math-7B") == "Qwen" and T.model_family("CodeLlama-34B") == "Llama"
    assert T.model_family("Phi-3-mini") == "Phi" and T.model_family("Falcon-7B") == "Other"
    t = T.base_model_families(studies)
    got = {(r.year, r.family): r.studies for r in t.itertuples()}
    assert got == {(2023, "Llama"): 2, (2023, "Mistral"): 1, (2024, "Qwen"): 1, (2024, "Llama"): 1,
                   (2025, "Qwen"): 2, (2025, "DeepSeek"): 1}


def test_census_rule_and_h1_projection():
    papers = T.read_corpus(FIXTURES / "corpus.jsonl")
    assert T.count_mentions("AIME aimed aime-2024 xaime", "aime") == 2  # 'aimed'/'xaime' don't count
    t = T.census(papers, k=5, partial_year=2025)
    got = {(r.domain, r.year): (r.count, r.projected) for r in t.itertuples()}
    # p1 gsm8k x5 -> math 2023; p2 svamp x4 (< k), 'aimed' is not AIME -> nothing
    # p3 webshop x5 -> agentic, hotpotqa x5 -> general; p4 swe-bench x5 -> code, miniwob++ x6 -> agentic
    # p5 is July-December of the partial year -> dropped; p6 aime x5 in June -> math 2025
    assert got == {("math", 2023): (1, 1), ("agentic", 2024): (1, 1), ("general", 2024): (1, 1),
                   ("code", 2025): (1, 2), ("agentic", 2025): (1, 2), ("math", 2025): (1, 2)}
    assert T.census(papers, k=6).query("domain == 'agentic'")["count"].tolist() == [1]  # only miniwob++ x6


def test_read_corpus_reports_bad_lines(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": 1, "date": "2024-01-01", "text": "x"}\n{"id": 2}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2: expected a JSON object"):
        T.read_corpus(p)


def test_trends_command_writes_every_figure_and_table(tmp_path):
    from typer.testing import CliRunner

    from sftrl_cli import app

    r = CliRunner().invoke(app, ["trends", "--data", str(MINI), "--out", str(tmp_path), "--format", "svg",
                                 "--corpus", str(FIXTURES / "corpus.jsonl"), "--partial-year", "2025"])
    assert r.exit_code == 0, r.output
    names = {p.name for p in tmp_path.iterdir()}
    for fig in ("paradigm_by_year", "data_source_by_year", "algorithm_adoption", "domain_paradigm",
                "base_model_families", "method_graph", "census"):
        assert f"{fig}.svg" in names
        assert (tmp_path / f"{fig}.svg").stat().st_size > 5000
    assert {"paradigm_by_year.csv", "data_source_by_year.csv", "census.csv", "trends.md"} <= names
    md = (tmp_path / "trends.md").read_text()
    assert "2024 RL-only: ours 50.0% vs survey 7.1%" in md and "| 2023 | 3 |" in md


def test_inherited_sft_sensitivity_moves_only_rl_studies_on_tuned_models():
    import pandas as pd

    df = pd.DataFrame({"id": ["a", "b", "c", "d"], "year": [2024] * 4, "domain": ["math"] * 4,
                       "paradigm": ["rl", "rl", "sft", "rl"],
                       "base_models": [["Qwen2.5-7B-Instruct"], ["Qwen2.5-7B"], ["Llama-2-7b-chat"], ["Alpaca-7B"]]})
    out = T.with_inherited_sft(df).set_index("id")["paradigm"].to_dict()
    assert out == {"a": "hybrid", "b": "rl", "c": "sft", "d": "hybrid"}
    assert not T.starts_from_tuned(["Mistral-7B", "Gemma-2B"]) and T.starts_from_tuned(["gemma-2-9b-it"])
