"""The method graph: methods as nodes, typed relations as edges.

An edge `source --kind--> target` reads "source <kind> target", e.g. `grpo --removes_component--> ppo`
("GRPO drops PPO's critic"). Derivation kinds (everything but `equivalent_under`) point from the
newer method to the one it derives from, so a method's *lineage* is what it can reach and its
*descendants* are what can reach it.

`build_graph` gives a networkx `MultiDiGraph` (for analysis and the GraphML / JSON exports);
`method_graph` gives a small `Graph` with the same `nodes` / `edges` / `out_edges` / `in_edges`
reading API and no networkx import, which the CLI uses to answer in well under a second. Every
query and the Mermaid / DOT exports accept either.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from taxonomy.schema import DERIVATION_KINDS, Paradigm, RelationKind

if TYPE_CHECKING:
    import networkx as nx

    from taxonomy.registry import Registry

_DERIVATION = {str(k) for k in DERIVATION_KINDS}


class Graph:
    """A multi-digraph of methods in plain dicts, read like networkx's (`g.nodes[n]`, `n in g`,
    `g.edges(data=...)`, `g.out_edges(n, data=True)`, `g.in_edges(n, data=True)`)."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self._succ: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._pred: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def add_node(self, n: str, **attrs: Any) -> None:
        self.nodes.setdefault(n, {}).update(attrs)
        self._succ.setdefault(n, {})
        self._pred.setdefault(n, {})

    def add_edge(self, u: str, v: str, **attrs: Any) -> None:
        for n in (u, v):
            if n not in self.nodes:
                self.add_node(n)
        self._succ[u].setdefault(v, []).append(attrs)
        self._pred[v].setdefault(u, []).append(attrs)

    def __contains__(self, n: object) -> bool:
        return n in self.nodes

    def number_of_nodes(self) -> int:
        return len(self.nodes)

    def number_of_edges(self) -> int:
        return sum(len(ds) for nbrs in self._succ.values() for ds in nbrs.values())

    def edges(self, data: bool | str = False) -> list[tuple]:
        return [_pick(u, v, d, data) for u, nbrs in self._succ.items() for v, ds in nbrs.items() for d in ds]

    def out_edges(self, n: str, data: bool | str = False) -> list[tuple]:
        return [_pick(n, v, d, data) for v, ds in self._succ[n].items() for d in ds]

    def in_edges(self, n: str, data: bool | str = False) -> list[tuple]:
        return [_pick(u, n, d, data) for u, ds in self._pred[n].items() for d in ds]


def _pick(u: str, v: str, d: dict[str, Any], data: bool | str) -> tuple:
    if data is True:
        return (u, v, d)
    return (u, v, d.get(data)) if data else (u, v)


AnyGraph = Graph | Any  # a Graph or a networkx MultiDiGraph


def _fill(g: Any, registry: Registry) -> Any:
    for m in registry.methods.values():
        g.add_node(m.id, name=m.name, full_name=m.full_name, paradigm=str(m.paradigm),
                   family=str(m.family), year=m.year, arxiv=m.arxiv or "")
    for r in registry.relations:
        attrs = {"kind": str(r.kind), "note": r.note, "citation": r.citation}
        if isinstance(g, Graph):
            g.add_edge(r.source, r.target, **attrs)
        else:
            g.add_edge(r.source, r.target, key=str(r.kind), **attrs)
    return g


def method_graph(registry: Registry) -> Graph:
    """The graph as a light `Graph` (no networkx import)."""
    return _fill(Graph(), registry)


def build_graph(registry: Registry) -> nx.MultiDiGraph:
    """The graph as a networkx MultiDiGraph."""
    import networkx as nx

    return _fill(nx.MultiDiGraph(), registry)


def to_networkx(g: AnyGraph) -> nx.MultiDiGraph:
    if not isinstance(g, Graph):
        return g
    import networkx as nx

    out = nx.MultiDiGraph()
    out.add_nodes_from(g.nodes.items())
    for u, v, d in g.edges(data=True):
        out.add_edge(u, v, key=d["kind"], **d)
    return out


def derivation_graph(g: AnyGraph) -> nx.DiGraph:
    import networkx as nx

    d = nx.DiGraph()
    d.add_nodes_from(g.nodes.items())
    d.add_edges_from((u, v) for u, v, k in g.edges(data="kind") if k in _DERIVATION)
    return d


def _parents(g: AnyGraph) -> dict[str, list[str]]:
    """method -> the methods it derives from (derivation edges only)."""
    out: dict[str, list[str]] = {n: [] for n in g.nodes}
    for u, v, k in g.edges(data="kind"):
        if k in _DERIVATION:
            out[u].append(v)
    return out


def _reach(adj: dict[str, list[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = deque(adj.get(start, ()))
    while todo:
        n = todo.popleft()
        if n not in seen:
            seen.add(n)
            todo.extend(adj.get(n, ()))
    seen.discard(start)
    return seen


def derivation_cycles(registry: Registry) -> list[list[str]]:
    """One cycle per group of methods that derive from each other (a strongly connected component),
    found in time linear in the graph: a dense graph's every cycle is never enumerated."""
    adj = _parents(method_graph(registry))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(adj):
        if root in index:
            continue
        work = [(root, iter(adj[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:  # iterative Tarjan
            node, it = work[-1]
            child = next(it, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(adj[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    comp.append(n)
                    if n == node:
                        break
                if len(comp) > 1 or node in adj[node]:
                    cycles.append(_one_cycle(adj, set(comp)))
    return cycles


def _one_cycle(adj: dict[str, list[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the smallest member of a strongly connected component."""
    start = min(comp)
    prev: dict[str, str] = {}
    todo = deque([start])
    while todo:
        n = todo.popleft()
        for m in adj[n]:
            if m not in comp:
                continue
            if m == start:
                path = [n]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return path[::-1]
            if m not in prev:
                prev[m] = n
                todo.append(m)
    return sorted(comp)


def _check(g: AnyGraph, *ids: str) -> None:
    from taxonomy.loading import suggest

    for i in ids:
        if i not in g:
            hint = suggest(i, g.nodes) or f" (not one of the {len(g.nodes)} methods: sftrl methods list)"
            raise KeyError(f"unknown method {i!r}{hint}")


def lineage(g: AnyGraph, method: str) -> list[str]:
    """Every method `method` derives from (its ancestors), oldest first."""
    _check(g, method)
    anc = _reach(_parents(g), method)  # edges point child -> parent
    return sorted(anc, key=lambda n: (g.nodes[n]["year"], n))


def descendants(g: AnyGraph, method: str) -> list[str]:
    """Every method derived (directly or not) from `method`, oldest first."""
    _check(g, method)
    children: dict[str, list[str]] = {}
    for child, parents in _parents(g).items():
        for p in parents:
            children.setdefault(p, []).append(child)
    return sorted(_reach(children, method), key=lambda n: (g.nodes[n]["year"], n))


def neighbours(g: AnyGraph, method: str, kind: str | None = None) -> list[dict[str, str]]:
    """Edges touching `method` (both directions), optionally of one kind."""
    _check(g, method)
    rows = []
    for u, v, data in list(g.out_edges(method, data=True)) + list(g.in_edges(method, data=True)):
        if kind is None or data["kind"] == kind:
            rows.append({"source": u, "kind": data["kind"], "target": v, "note": data["note"],
                         "citation": data["citation"]})
    return rows


class NoPath(LookupError):
    """No chain of relations joins the two methods."""


def path(g: AnyGraph, a: str, b: str) -> list[dict[str, str]]:
    """Shortest chain of relations between two methods (edges read in either direction).

    Raises `NoPath` when none exists."""
    _check(g, a, b)
    first: dict[tuple[str, str], dict[str, Any]] = {}  # (u, v) -> the first edge u -> v
    nbrs: dict[str, list[str]] = {n: [] for n in g.nodes}
    for u, v, d in g.edges(data=True):
        first.setdefault((u, v), d)
        nbrs[u].append(v)
        nbrs[v].append(u)
    prev: dict[str, str] = {a: a}
    todo = deque([a])
    while todo and b not in prev:
        n = todo.popleft()
        for m in nbrs[n]:
            if m not in prev:
                prev[m] = n
                todo.append(m)
    if b not in prev:
        raise NoPath(f"no path between {a} and {b}")
    nodes = [b]
    while nodes[-1] != a:
        nodes.append(prev[nodes[-1]])
    nodes.reverse()
    steps = []
    for u, v in zip(nodes, nodes[1:], strict=False):
        s, t = (u, v) if (u, v) in first else (v, u)
        d = first[(s, t)]
        steps.append({"source": s, "kind": d["kind"], "target": t, "note": d["note"]})
    return steps


def by_paradigm(g: AnyGraph, paradigms: Iterable[Paradigm | str]) -> AnyGraph:
    keep = {str(p) for p in paradigms}
    if isinstance(g, Graph):
        sub = Graph()
        for n, d in g.nodes.items():
            if d.get("paradigm") in keep:
                sub.add_node(n, **d)
        for u, v, d in g.edges(data=True):
            if u in sub and v in sub:
                sub.add_edge(u, v, **d)
        return sub
    return g.subgraph([n for n, p in g.nodes(data="paradigm") if p in keep]).copy()


# ---------------------------------------------------------------------------- exports


def _node_items(g: AnyGraph) -> list[tuple[str, dict[str, Any]]]:
    return sorted(g.nodes.items())


def to_mermaid(g: AnyGraph) -> str:
    lines = ["flowchart BT"]
    for n, data in _node_items(g):
        lines.append(f'  {_mid(n)}["{data["name"]} ({data["year"]})"]:::{data["paradigm"]}')
    for u, v, k in sorted(g.edges(data="kind")):
        arrow = "-.->" if k == RelationKind.equivalent_under else "-->"
        lines.append(f"  {_mid(u)} {arrow}|{k}| {_mid(v)}")
    lines += [
        "  classDef sft fill:#56B4E9,color:#000",
        "  classDef rl fill:#E69F00,color:#000",
        "  classDef hybrid fill:#009E73,color:#fff",
    ]
    return "\n".join(lines) + "\n"


def _mid(n: str) -> str:
    return n.replace("-", "_")


def to_dot(g: AnyGraph) -> str:
    colour = {"sft": "#56B4E9", "rl": "#E69F00", "hybrid": "#009E73"}
    lines = ["digraph methods {", "  rankdir=BT; node [shape=box, style=filled];"]
    for n, data in _node_items(g):
        lines.append(f'  "{n}" [label="{data["name"]}\\n{data["year"]}", fillcolor="{colour[data["paradigm"]]}"];')
    for u, v, k in sorted(g.edges(data="kind")):
        style = "dashed" if k == RelationKind.equivalent_under else "solid"
        lines.append(f'  "{u}" -> "{v}" [label="{k}", style={style}];')
    return "\n".join(lines + ["}"]) + "\n"


def to_graphml(g: AnyGraph) -> str:
    import networkx as nx

    return "\n".join(nx.generate_graphml(to_networkx(g))) + "\n"


def to_node_link(g: AnyGraph) -> str:
    import networkx as nx

    return json.dumps(nx.node_link_data(to_networkx(g), edges="edges"), indent=2) + "\n"


EXPORTS = {"mermaid": to_mermaid, "dot": to_dot, "graphml": to_graphml, "json": to_node_link}
