"""Queries and exports of the catalogue engine, on the fixture catalogue (hand-checked answers)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from catalog import Catalog
from catalog import export as X
from tests.conftest import MINI


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog.load(MINI)


def ids(df: pd.DataFrame) -> set[str]:
    return set(df["id"])


def test_frame_derives_paradigm(cat):
    df = cat.frame().set_index("id")
    assert df.loc["s23-hybrid", "paradigm"] == "hybrid"  # sft -> dpo
    assert df.loc["s25-hybrid-luffy", "paradigm"] == "hybrid"  # a hybrid method alone
    assert df.loc["s24-rl", "paradigm"] == "rl"
    assert df.loc["s23-sft-b", "paradigm"] == "sft"
    assert df["paradigm"].value_counts().to_dict() == {"hybrid": 3, "sft": 3, "rl": 2}


def test_filters(cat):
    assert ids(cat.query(domain="code")) == {"s23-hybrid", "s25-rl-dapo", "s25-sft"}  # any domain
    assert ids(cat.query(year=2024)) == {"s24-rl", "s24-hybrid"}
    assert ids(cat.query(year=[2023, 2025], paradigm="rl")) == {"s25-rl-dapo"}
    assert ids(cat.query(method="grpo")) == {"s24-rl"}
    assert ids(cat.query(method="grpo", include_descendants=True)) == {"s24-rl", "s25-rl-dapo", "s25-hybrid-luffy"}
    assert ids(cat.query(source="proprietary_model")) == {"s23-sft-a", "s23-hybrid"}
    assert ids(cat.query(base_model="qwen")) == {"s24-rl", "s25-hybrid-luffy", "s25-rl-dapo"}
    assert ids(cat.query(text="study SEVEN")) == {"s25-rl-dapo"}
    assert ids(cat.query(domain="math", paradigm="hybrid")) == {"s25-hybrid-luffy"}


def test_bad_filter_values_are_explained(cat):
    with pytest.raises(ValueError, match="expected one of general, math"):
        cat.query(domain="biology")
    with pytest.raises(KeyError, match="did you mean"):
        cat.query(method="dpoo")


def test_long_tables(cat):
    st = cat.stages()
    assert len(st[st.study == "s24-rl"]) == 3  # one row per data source
    res = cat.results()
    assert sorted(res["benchmark"]) == ["GSM8K", "GSM8K", "MATH"]
    assert set(res["origin"]) == {"reported"}


def test_exports(cat):
    df = cat.query(year=2024)
    csv = X.to_csv(df)
    back = pd.read_csv(__import__("io").StringIO(csv))
    assert list(back["id"]) == ["s24-rl", "s24-hybrid"]
    recs = json.loads(X.to_json(df))
    assert recs[0]["methods"] == ["grpo"]
    md = X.to_markdown(df)
    assert md.count("\n") == 4 and md.startswith("| id |")
    bib = X.to_bibtex(df)
    assert "@misc{s24-rl," in bib and "eprint = {2402.00004}" in bib


def test_taxonomy_and_catalog_do_not_import_torch():
    code = ("import sys; from catalog import Catalog; import taxonomy.graph; "
            f"c = Catalog.load({str(MINI)!r}); c.query(method='grpo', include_descendants=True); "
            "import catalog.trends; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_frame_is_built_once_and_select_agrees_with_query(cat):
    first = cat.frame()
    first.loc[0, "title"] = "changed by a caller"
    assert cat.frame().loc[0, "title"] != "changed by a caller"  # a copy each time
    assert cat._built() is cat._built()  # one frame per catalogue
    for kw in ({}, {"domain": "math"}, {"method": "grpo", "include_descendants": True}, {"text": "study"}):
        assert [r["id"] for r in cat.select(**kw).records] == list(cat.query(**kw)["id"])
    for fmt in ("csv", "json", "markdown", "bibtex"):  # exports agree for a DataFrame and for Rows
        assert X.FORMATS[fmt](cat.query(year=2024)) == X.FORMATS[fmt](cat.select(year=2024))
