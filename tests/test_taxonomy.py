"""Schema, registry and graph on the fixture catalogue."""

from __future__ import annotations

import json

import networkx as nx
import pytest
from pydantic import ValidationError

from taxonomy import graph as G
from taxonomy.registry import load_registry
from taxonomy.schema import Method, Paradigm, Pipeline, Study, derive_paradigm
from tests.conftest import MINI


@pytest.fixture(scope="module")
def g() -> nx.MultiDiGraph:
    return G.build_graph(load_registry(MINI))


def test_derive_paradigm_is_the_surveys_three_way_split():
    assert derive_paradigm([Paradigm.sft]) is Paradigm.sft
    assert derive_paradigm([Paradigm.sft, Paradigm.sft]) is Paradigm.sft
    assert derive_paradigm([Paradigm.rl]) is Paradigm.rl
    assert derive_paradigm([Paradigm.sft, Paradigm.rl]) is Paradigm.hybrid
    assert derive_paradigm([Paradigm.rl, Paradigm.sft]) is Paradigm.hybrid
    assert derive_paradigm([Paradigm.hybrid]) is Paradigm.hybrid


def _study(**kw):
    base = dict(id="x", title="T", arxiv="2402.03300", domains=["math"],
                pipeline=[{"method": "sft"}], sources=["https://arxiv.org/abs/2402.03300"])
    return Study.model_validate(base | kw)


def test_study_date_must_agree_with_arxiv_month():
    assert _study(date="2024-02-05").year == 2024
    with pytest.raises(ValidationError, match="contradicts arXiv id"):
        _study(date="2024-03-01")


def test_strictness_unknown_fields_bad_ids_and_enums():
    with pytest.raises(ValidationError, match="Extra inputs"):
        _study(paradigm="sft")  # derived, never typed
    with pytest.raises(ValidationError):
        _study(arxiv="2402.3300")
    with pytest.raises(ValidationError):
        _study(id="Not A Slug")
    with pytest.raises(ValidationError):
        _study(domains=["biology"])
    with pytest.raises(ValidationError):
        _study(pipeline=[])


def test_pipeline_accepts_a_plain_list_of_stages():
    assert Pipeline.model_validate([{"method": "sft"}, {"method": "dpo"}]).method_ids() == ["sft", "dpo"]


def test_method_year_must_match_arxiv():
    m = load_registry(MINI).methods["grpo"].model_dump()
    with pytest.raises(ValidationError, match="contradicts"):
        Method.model_validate(m | {"year": 2023})


def test_lineage_and_descendants(g):
    assert G.lineage(g, "luffy") == ["reinforce", "ppo", "sft", "grpo"]
    assert G.lineage(g, "dft") == ["reinforce", "sft"]
    assert set(G.descendants(g, "grpo")) == {"dapo", "luffy"}
    assert G.descendants(g, "dapo") == []
    # equivalent_under is not a derivation: DPO does not descend from PPO
    assert "dpo" not in G.descendants(g, "ppo")


def test_unknown_method_suggests_close_match(g):
    with pytest.raises(KeyError, match="did you mean 'grpo'"):
        G.lineage(g, "gpro")


def test_path_reads_edges_in_either_direction(g):
    steps = G.path(g, "dft", "dapo")
    assert len(steps) == 4  # dft-sft-(reinforce|luffy)-grpo-dapo: two shortest routes
    chain = {(s["source"], s["target"]) for s in steps}
    assert ("dft", "sft") in chain and ("dapo", "grpo") in chain  # edges keep their own direction
    assert chain & {("sft", "reinforce"), ("luffy", "sft")} and chain & {("grpo", "reinforce"), ("luffy", "grpo")}


def test_neighbours_by_kind(g):
    rows = G.neighbours(g, "grpo", kind="removes_component")
    assert rows == [{"source": "grpo", "kind": "removes_component", "target": "ppo",
                     "note": "no critic", "citation": "2402.03300"}]


def test_subgraph_by_paradigm(g):
    sub = G.by_paradigm(g, ["hybrid"])
    assert set(sub.nodes) == {"dft", "luffy"}


def test_exports_round_trip(g, tmp_path):
    p = tmp_path / "g.graphml"
    p.write_text(G.to_graphml(g))
    back = nx.read_graphml(p)
    assert set(back.nodes) == set(g.nodes) and back.number_of_edges() == g.number_of_edges()
    data = json.loads(G.to_node_link(g))
    assert len(data["nodes"]) == 8 and len(data["edges"]) == 8
    mer = G.to_mermaid(g)
    assert mer.startswith("flowchart") and "grpo -->|removes_component| ppo" in mer
    assert "dpo -.->|equivalent_under| ppo" in mer
    dot = G.to_dot(g)
    assert '"dft" -> "sft" [label="rectifies"' in dot


def test_cycle_in_derivations_is_reported(mini_dir):
    from catalog.catalog import check_catalog

    rel = mini_dir / "relations.yaml"
    rel.write_text(rel.read_text() + '  - {source: reinforce, target: dapo, kind: extends, note: x, citation: "2503.14476"}\n')
    _, _, problems = check_catalog(mini_dir)
    assert any("cycle" in p.message for p in problems)
