"""The method graph: methods as nodes, typed relations as edges (networkx).

An edge `source --kind--> target` reads "source <kind> target", e.g. `grpo --removes_component--> ppo`
("GRPO drops PPO's critic"). Derivation kinds (everything but `equivalent_under`) point from the
newer method to the one it derives from, so a method's *lineage* is what it can reach and its
*descendants* are what can reach it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import networkx as nx

from taxonomy.registry import Registry
from taxonomy.schema import DERIVATION_KINDS, Paradigm, RelationKind


def build_graph(registry: Registry) -> nx.MultiDiGraph:
    g = nx.MultiDiGraph()
    for m in registry.methods.values():
        g.add_node(
            m.id, name=m.name, full_name=m.full_name, paradigm=str(m.paradigm),
            family=str(m.family), year=m.year, arxiv=m.arxiv or "",
        )
    for r in registry.relations:
        g.add_edge(r.source, r.target, key=str(r.kind), kind=str(r.kind), note=r.note, citation=r.citation)
    return g


def derivation_graph(g: nx.MultiDiGraph) -> nx.DiGraph:
    d = nx.DiGraph()
    d.add_nodes_from(g.nodes(data=True))
    d.add_edges_from((u, v) for u, v, k in g.edges(data="kind") if RelationKind(k) in DERIVATION_KINDS)
    return d


def derivation_cycles(registry: Registry) -> list[list[str]]:
    return [list(c) for c in nx.simple_cycles(derivation_graph(build_graph(registry)))]


def _check(g: nx.MultiDiGraph, *ids: str) -> None:
    from taxonomy.loading import suggest

    for i in ids:
        if i not in g:
            raise KeyError(f"unknown method {i!r}{suggest(i, g.nodes)}")


def lineage(g: nx.MultiDiGraph, method: str) -> list[str]:
    """Every method `method` derives from (its ancestors), oldest first."""
    _check(g, method)
    anc = nx.descendants(derivation_graph(g), method)  # edges point child -> parent
    return sorted(anc, key=lambda n: (g.nodes[n]["year"], n))


def descendants(g: nx.MultiDiGraph, method: str) -> list[str]:
    """Every method derived (directly or not) from `method`, oldest first."""
    _check(g, method)
    desc = nx.ancestors(derivation_graph(g), method)
    return sorted(desc, key=lambda n: (g.nodes[n]["year"], n))


def neighbours(g: nx.MultiDiGraph, method: str, kind: str | None = None) -> list[dict[str, str]]:
    """Edges touching `method` (both directions), optionally of one kind."""
    _check(g, method)
    rows = []
    for u, v, data in list(g.out_edges(method, data=True)) + list(g.in_edges(method, data=True)):
        if kind is None or data["kind"] == kind:
            rows.append({"source": u, "kind": data["kind"], "target": v, "note": data["note"],
                         "citation": data["citation"]})
    return rows


def path(g: nx.MultiDiGraph, a: str, b: str) -> list[dict[str, str]]:
    """Shortest chain of relations between two methods (edges read in either direction)."""
    _check(g, a, b)
    nodes = nx.shortest_path(g.to_undirected(as_view=True), a, b)
    steps = []
    for u, v in zip(nodes, nodes[1:], strict=False):
        if g.has_edge(u, v):
            data = next(iter(g.get_edge_data(u, v).values()))
            steps.append({"source": u, "kind": data["kind"], "target": v, "note": data["note"]})
        else:
            data = next(iter(g.get_edge_data(v, u).values()))
            steps.append({"source": v, "kind": data["kind"], "target": u, "note": data["note"]})
    return steps


def by_paradigm(g: nx.MultiDiGraph, paradigms: Iterable[Paradigm | str]) -> nx.MultiDiGraph:
    keep = {str(p) for p in paradigms}
    return g.subgraph([n for n, p in g.nodes(data="paradigm") if p in keep]).copy()


# ---------------------------------------------------------------------------- exports


def to_mermaid(g: nx.MultiDiGraph) -> str:
    lines = ["flowchart BT"]
    for n, data in sorted(g.nodes(data=True)):
        lines.append(f'  {_mid(n)}["{data["name"]} ({data["year"]})"]:::{data["paradigm"]}')
    for u, v, k in sorted(g.edges(data="kind")):
        arrow = "-.->" if k == "equivalent_under" else "-->"
        lines.append(f"  {_mid(u)} {arrow}|{k}| {_mid(v)}")
    lines += [
        "  classDef sft fill:#56B4E9,color:#000",
        "  classDef rl fill:#E69F00,color:#000",
        "  classDef hybrid fill:#009E73,color:#fff",
    ]
    return "\n".join(lines) + "\n"


def _mid(n: str) -> str:
    return n.replace("-", "_")


def to_dot(g: nx.MultiDiGraph) -> str:
    colour = {"sft": "#56B4E9", "rl": "#E69F00", "hybrid": "#009E73"}
    lines = ["digraph methods {", "  rankdir=BT; node [shape=box, style=filled];"]
    for n, data in sorted(g.nodes(data=True)):
        lines.append(f'  "{n}" [label="{data["name"]}\\n{data["year"]}", fillcolor="{colour[data["paradigm"]]}"];')
    for u, v, k in sorted(g.edges(data="kind")):
        style = "dashed" if k == "equivalent_under" else "solid"
        lines.append(f'  "{u}" -> "{v}" [label="{k}", style={style}];')
    return "\n".join(lines + ["}"]) + "\n"


def to_graphml(g: nx.MultiDiGraph) -> str:
    return "\n".join(nx.generate_graphml(g)) + "\n"


def to_node_link(g: nx.MultiDiGraph) -> str:
    return json.dumps(nx.node_link_data(g, edges="edges"), indent=2) + "\n"


EXPORTS = {"mermaid": to_mermaid, "dot": to_dot, "graphml": to_graphml, "json": to_node_link}
