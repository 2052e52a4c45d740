"""The graph page's data: methods placed on a grid (x = year, y = family lane), typed edges.

A fixed layout rather than a force simulation: the same picture on every load, and the two axes
mean something (when a method appeared, which family it belongs to).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from explorer.html import KIND_COLOURS
from taxonomy.registry import Registry
from taxonomy.schema import DERIVATION_KINDS, Family, RelationKind

CHAR_W, MAX_TEXT, PAD, LINE_H = 7.0, 104, 14, 15  # label size estimates at font-size 12 (graph.js)
GAP, COL_GAP, LANE_GAP, PER_ROW = 10, 56, 16, 3


def node_size(name: str) -> tuple[float, float]:
    """Width and height of a node box: labels wrap at MAX_TEXT pixels (cytoscape text-wrap)."""
    text = len(name) * CHAR_W
    lines = -(-text // MAX_TEXT)
    return min(text, MAX_TEXT) + PAD, lines * LINE_H + 10


def graph_data(registry: Registry) -> dict[str, Any]:
    methods = list(registry.methods.values())
    families = [f.value for f in Family if any(str(m.family) == f.value for m in methods)]
    years = sorted({m.year for m in methods})
    cells: dict[tuple[str, int], list[list[str]]] = defaultdict(list)  # (family, year) -> rows of ids
    for m in sorted(methods, key=lambda m: m.name.lower()):
        rows = cells[(str(m.family), m.year)]
        if not rows or len(rows[-1]) == PER_ROW:
            rows.append([])
        rows[-1].append(m.id)
    size = {m.id: node_size(m.name) for m in methods}
    row_w = {k: [sum(size[i][0] for i in r) + GAP * (len(r) - 1) for r in rows] for k, rows in cells.items()}
    col_w = {y: max(w for (f, yy), ws in row_w.items() if yy == y for w in ws) for y in years}
    col_x, x = {}, 0.0
    for y in years:
        col_x[y] = x + col_w[y] / 2
        x += col_w[y] + COL_GAP
    row_h = {k: [max(size[i][1] for i in r) for r in rows] for k, rows in cells.items()}
    lane_h = {f: max((sum(row_h[(f, y)]) + GAP * (len(row_h[(f, y)]) - 1) for y in years if (f, y) in cells),
                     default=0) for f in families}
    lane_top, y = {}, 0.0
    for f in families:
        lane_top[f] = y
        y += lane_h[f] + LANE_GAP
    nodes = []
    for (fam, yr), rows in cells.items():
        top = lane_top[fam] + (lane_h[fam] - sum(row_h[(fam, yr)]) - GAP * (len(rows) - 1)) / 2
        for ids, h, w in zip(rows, row_h[(fam, yr)], row_w[(fam, yr)], strict=True):
            left = col_x[yr] - w / 2
            for mid in ids:
                m = registry[mid]
                nw, nh = size[mid]
                nodes.append({"id": mid, "name": m.name, "paradigm": str(m.paradigm), "family": fam, "year": yr,
                              "idea": m.idea, "w": nw, "h": nh, "x": left + nw / 2, "y": top + h / 2})
                left += nw + GAP
            top += h + GAP
    axes = [{"id": f"year-{yr}", "label": str(yr), "x": col_x[yr], "y": -28} for yr in years]
    axes += [{"id": f"family-{f}", "label": f.replace("_", " "), "x": -90, "y": lane_top[f] + lane_h[f] / 2}
             for f in families]
    edges = [{"id": f"{r.source}->{r.target}:{r.kind}", "source": r.source, "target": r.target,
              "kind": str(r.kind), "note": r.note, "citation": r.citation,
              "derivation": RelationKind(r.kind) in DERIVATION_KINDS} for r in registry.relations]
    return {"nodes": nodes, "edges": edges, "axes": axes, "lanes": families, "colours": KIND_COLOURS}
