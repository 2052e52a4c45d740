"""Invariants of the shipped data: the registry, the graph and the catalogue as a whole."""

from __future__ import annotations

import pandas as pd
import pytest

from catalog import Catalog
from catalog.catalog import normalise_title
from taxonomy import graph as G
from taxonomy.schema import DERIVATION_KINDS, RelationKind


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog.load()  # raises DataError listing every problem if anything is invalid


@pytest.fixture(scope="module")
def g(cat):
    return G.build_graph(cat.registry)


SURVEY_METHODS = ["sft", "gem", "token-cleaning", "otr", "fisher-sft", "lima", "ppo", "grpo", "remax", "rloo", "reinforce-pp", "raft-pp", "entropy-bonus", "clip-cov", "kl-cov", "entropy-advantage", "pods", "greso", "sec", "luffy", "srft", "bread", "nft", "relift", "dft", "iw-sft", "prefix-rft", "chord", "uft", "hpt", "srl", "dpo", "ipo", "kto", "orpo", "simpo", "online-dpo", "rft", "star", "rest-em", "raft", "dapo", "dr-grpo", "gspo", "rlhf", "r1-pipeline", "sft-dpo"]


def test_every_method_the_survey_names_is_registered(cat):
    missing = [m for m in SURVEY_METHODS if m not in cat.registry]
    assert not missing


def test_methods_have_sources_and_unique_arxiv_ids(cat):
    ms = list(cat.registry.methods.values())
    assert all(m.sources for m in ms)
    ids = [(m.arxiv, m.id) for m in ms if m.arxiv]
    seen: dict[str, list[str]] = {}
    for a, i in ids:
        seen.setdefault(a, []).append(i)
    # a paper may define two methods (Clip-Cov and KL-Cov; GRPO in DeepSeekMath is one id only)
    shared = {a: v for a, v in seen.items() if len(v) > 1}
    assert set(map(frozenset, shared.values())) <= {frozenset({"clip-cov", "kl-cov"})}, shared


@pytest.mark.parametrize("source,kind,target", [
    ("sft", "special_case_of", "reinforce"),  # the survey's unifying result
    ("dft", "rectifies", "sft"),
    ("iw-sft", "rectifies", "sft"),
    ("grpo", "removes_component", "ppo"),
    ("rloo", "removes_component", "ppo"),
    ("remax", "removes_component", "ppo"),
    ("reinforce-pp", "removes_component", "ppo"),
    ("dapo", "modifies", "grpo"),
    ("dr-grpo", "modifies", "grpo"),
    ("gspo", "modifies", "grpo"),
])
def test_required_relations(g, source, kind, target):
    assert kind in {d["kind"] for d in g.get_edge_data(source, target, default={}).values()}


def test_dpo_equivalence_and_hybrids_combine_both_parents(cat, g):
    dpo = {(v, d["kind"]) for _, v, d in g.out_edges("dpo", data=True)}
    assert any(k == "equivalent_under" and v in {"rlhf", "ppo"} for v, k in dpo)
    for h in ["luffy", "srft", "bread", "nft", "relift", "prefix-rft", "chord", "uft", "hpt", "srl",
              "rlhf", "r1-pipeline", "sft-dpo"]:
        parents = [v for _, v, d in g.out_edges(h, data=True) if d["kind"] == "combines"]
        paradigms = {str(cat.registry[p].paradigm) for p in parents}
        assert len(parents) >= 2 and "rl" in paradigms, (h, parents)


def test_derivations_are_acyclic(g):
    d = G.derivation_graph(g)
    assert all(RelationKind(k) in DERIVATION_KINDS for _, _, k in g.edges(data="kind") if k != "equivalent_under")
    import networkx as nx

    assert nx.is_directed_acyclic_graph(d)


def test_catalogue_size_balance_and_provenance(cat):
    f = cat.frame()
    assert len(f) >= 150
    assert f["url"].str.startswith("http").all()
    assert f["arxiv"].is_unique and f["title"].map(normalise_title).is_unique
    counts = pd.crosstab(f["domain"], f["year"])
    assert set(counts.index) == {"general", "math", "agentic", "code"}
    assert (counts.sum(axis=1) >= 30).all(), counts  # >= 30 per (primary) domain
    assert (counts[[2023, 2024, 2025]] >= 8).all().all(), counts  # every year in every domain
    # the date, where recorded, agrees with the id (also enforced by the schema)
    dated = f.dropna(subset=["date"])
    assert (dated["date"].map(lambda d: f"{d.year % 100:02d}{d.month:02d}") == dated["arxiv"].str[:4]).all()


def test_reported_results_are_attributed(cat):
    r = cat.results()
    assert len(r) > 50 and (r["origin"] == "reported").all()
    assert r["value"].notna().all()


def test_rl_only_pipelines_say_where_they_were_read(cat):
    """Issue 15: every RL-only study and every `rl-other` stage records where its pipeline was read
    (an SFT stage the authors ran is easy to miss in an abstract), with the words seen."""
    targets = [s for s in cat.studies if cat.paradigm(s) == "rl" or "rl-other" in s.pipeline.method_ids()]
    missing = [s.id for s in targets if s.pipeline_read is None or not s.pipeline_evidence]
    assert targets and not missing, missing
    assert sum(1 for s in cat.studies if s.results) >= 200  # studies with a reported number
    assert len(cat.studies) >= 350


def test_every_study_cites_its_arxiv_page_and_no_mirror(cat):
    """Issue 22: the canonical arXiv page of every study is among its sources; mirror and proxy
    hosts are refused by the schema (taxonomy.schema.MIRROR_HOSTS)."""
    from taxonomy.schema import MIRROR_HOSTS

    missing = [s.id for s in cat.studies
               if not any(u.split("#")[0].rstrip("/").startswith(f"https://arxiv.org/abs/{s.arxiv}") for u in s.sources)]
    assert not missing, missing
    assert MIRROR_HOSTS.search("hg.istephan-squireso.workers.dev") and MIRROR_HOSTS.search("huggingface.co.")
    assert not MIRROR_HOSTS.search("huggingface.co") and not MIRROR_HOSTS.search("arxiv.org")


def test_rl_other_is_rare_and_explained(cat):
    """Issue 22: `rl-other` only where no source names the algorithm, each saying what was read."""
    kept = [s for s in cat.studies if "rl-other" in s.pipeline.method_ids()]
    assert len(kept) <= 25 and all(s.pipeline_evidence for s in kept), [s.id for s in kept]


def test_base_model_names_are_whole(cat):
    """A flow list `[X (a, b)]` splits at the comma inside the parentheses: quote such names."""
    split = [(s.id, b) for s in cat.studies for b in s.base_models if b.count("(") != b.count(")")]
    assert not split, split
