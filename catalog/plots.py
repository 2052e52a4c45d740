"""Figures from the trend tables (matplotlib, Agg). Each function: table(s) in, Figure out.

Palette: Okabe-Ito (colour-blind safe). Every figure has a title, labelled axes with units, and a
legend placed outside the data.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from catalog.trends import PARADIGM_LABELS, PARADIGMS, SOURCE_LABELS, SURVEY_CENSUS  # noqa: E402

OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#999999"]
PARADIGM_COLOURS = {"sft": "#56B4E9", "rl": "#E69F00", "hybrid": "#009E73"}
SOURCE_COLOURS = {"benchmark": "#0072B2", "open_weight_model": "#009E73", "proprietary_model": "#D55E00",
                  "human_web": "#CC79A7"}

plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "font.size": 10, "axes.titlesize": 11,
                     "axes.spines.top": False, "axes.spines.right": False})


def _grouped_share_bars(ax, table: pd.DataFrame, cat: str, cats, labels, colours, survey_label: str) -> None:
    years = sorted(table["year"].unique())
    x = np.arange(len(years))
    w = 0.8 / len(cats)
    for i, c in enumerate(cats):
        t = table[table[cat] == c].set_index("year").reindex(years)
        pos = x - 0.4 + w * (i + 0.5)
        err = np.vstack([t["share"] - t["ci_low"], t["ci_high"] - t["share"]])
        ax.bar(pos, t["share"], w, color=colours[c], label=f"{labels[c]} (ours, 95% CI)",
               yerr=err, capsize=3, error_kw={"elinewidth": 1, "ecolor": "#333333"})
        ax.scatter(pos, t["survey"], marker="D", s=36, color="white", edgecolor="black", zorder=3,
                   label=survey_label if i == 0 else None)
    n = table.groupby("year")["n"].first().reindex(years)
    ax.set_xticks(x, [f"{y}\n(n = {int(k)})" for y, k in zip(years, n, strict=True)])
    ax.set_ylim(0, 100)
    ax.set_ylabel("share (%)")


def paradigm_figure(overall: pd.DataFrame, by_domain: pd.DataFrame | None = None) -> Figure:
    """Figure 1: paradigm shares per year, ours (bars + Wilson CI) beside the survey's (diamonds)."""
    domains = sorted(by_domain["domain"].unique()) if by_domain is not None and len(by_domain) else []
    fig = plt.figure(figsize=(11, 4.2 + (3.0 if domains else 0)), layout="constrained")
    grid = fig.add_gridspec(2 if domains else 1, max(1, len(domains)), height_ratios=[1.4, 1] if domains else [1])
    ax = fig.add_subplot(grid[0, :])
    _grouped_share_bars(ax, overall, "paradigm", PARADIGMS, PARADIGM_LABELS, PARADIGM_COLOURS,
                        "survey (arXiv 2603.13985, Fig. 2)")
    ax.set_title("Training paradigm of application studies per year: this catalogue vs the survey")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for j, d in enumerate(domains):
        a = fig.add_subplot(grid[1, j])
        t = by_domain[by_domain["domain"] == d]
        years = sorted(t["year"].unique())
        bottom = np.zeros(len(years))
        for c in PARADIGMS:
            v = t[t["paradigm"] == c].set_index("year").reindex(years)["share"].fillna(0).to_numpy()
            a.bar([str(y) for y in years], v, bottom=bottom, color=PARADIGM_COLOURS[c])
            bottom += v
        n = t.groupby("year")["n"].first().reindex(years)
        a.set_title(f"{d} (n = {', '.join(str(int(k)) for k in n)})", fontsize=9)
        a.set_ylim(0, 100)
        if j == 0:
            a.set_ylabel("share (%)")
    return fig


def source_figure(table: pd.DataFrame) -> Figure:
    """Figure 2: Figure-2 data-source shares per year, ours vs the survey's."""
    fig, ax = plt.subplots(figsize=(11, 4.2), layout="constrained")
    cats = list(SOURCE_LABELS)
    _grouped_share_bars(ax, table, "source", cats, SOURCE_LABELS, SOURCE_COLOURS, "survey (arXiv 2603.13985, Fig. 2)")
    ax.set_title("Source of training data per year (unit: distinct study-source mentions)")
    ax.set_xticks(ax.get_xticks(), [t.get_text().replace("n =", "mentions =") for t in ax.get_xticklabels()])
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def adoption_figure(table: pd.DataFrame, labels: dict[str, str] | None = None) -> Figure:
    """Figure 3: studies per year using each RL / preference / hybrid algorithm (lines)."""
    fig, ax = plt.subplots(figsize=(10, 4.5), layout="constrained")
    years = sorted(table["year"].unique())
    order = table.groupby("method")["studies"].sum().sort_values(ascending=False).index
    styles = ["-", "--", ":", "-."]
    for i, m in enumerate(order):
        t = table[table["method"] == m].set_index("year").reindex(years)["studies"].fillna(0)
        ax.plot(years, t, styles[(i // len(OKABE_ITO)) % 4], marker="o", color=OKABE_ITO[i % len(OKABE_ITO)],
                label=(labels or {}).get(m, m))
    ax.set_xticks(years, [str(y) for y in years])
    ax.set_xlabel("year of first arXiv version")
    ax.set_ylabel("studies using it (count)")
    ax.set_title("Adoption of RL, preference and hybrid algorithms in application studies")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncol=1 if len(order) < 16 else 2)
    return fig


def domain_paradigm_figure(table: pd.DataFrame) -> Figure:
    """Figure 4: counts heatmap, primary domain x paradigm."""
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    im = ax.imshow(table.to_numpy(), cmap="cividis")
    ax.set_xticks(range(table.shape[1]), [PARADIGM_LABELS[c] for c in table.columns])
    ax.set_yticks(range(table.shape[0]), table.index)
    vmax = table.to_numpy().max() or 1
    for (i, j), v in np.ndenumerate(table.to_numpy()):
        ax.text(j, i, str(v), ha="center", va="center", color="black" if v > vmax * 0.6 else "white")
    ax.set_title("Studies by primary domain and paradigm (count)")
    fig.colorbar(im, ax=ax, label="studies")
    return fig


def families_figure(table: pd.DataFrame) -> Figure:
    """Figure 5: base-model families per year (stacked bars, count of studies)."""
    piv = table.pivot_table(index="year", columns="family", values="studies", fill_value=0)
    piv = piv[piv.sum().sort_values(ascending=False).index]
    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    bottom = np.zeros(len(piv))
    for i, fam in enumerate(piv.columns):
        ax.bar([str(y) for y in piv.index], piv[fam], bottom=bottom, color=OKABE_ITO[i % len(OKABE_ITO)],
               label=fam, hatch="//" if i >= len(OKABE_ITO) else None)
        bottom += piv[fam].to_numpy()
    ax.set_xlabel("year of first arXiv version")
    ax.set_ylabel("studies fine-tuning a model of the family")
    ax.set_title("Base-model families in the catalogue per year")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def graph_figure(g: nx.MultiDiGraph) -> Figure:
    """Figure 6: the method graph, x = year, y = family; colour = paradigm; edge style = kind."""
    families = sorted({d["family"] for _, d in g.nodes(data=True)})
    years = sorted({d["year"] for _, d in g.nodes(data=True)})
    xpos = {y: i for i, y in enumerate(years)}  # ordinal years: 1992 and 2025 stay readable
    pos: dict[str, tuple[float, float]] = {}
    for fam_i, fam in enumerate(families):
        for yr in years:
            ids = sorted(n for n, d in g.nodes(data=True) if d["family"] == fam and d["year"] == yr)
            for k, n in enumerate(ids):
                pos[n] = (xpos[yr] + (k - (len(ids) - 1) / 2) * 0.28, fam_i + (k % 2) * 0.28 - 0.14 * (len(ids) > 1))
    fig, ax = plt.subplots(figsize=(15, 9), layout="constrained")
    kinds = sorted({k for _, _, k in g.edges(data="kind")})
    kind_style = {k: ls for k, ls in zip(kinds, ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1)), (0, (5, 5))], strict=False)}
    kind_colour = {k: c for k, c in zip(kinds, ["#555555", "#0072B2", "#D55E00", "#CC79A7", "#009E73", "#E69F00", "#000000", "#56B4E9"], strict=False)}
    for k in kinds:
        edges = [(u, v) for u, v, kk in g.edges(data="kind") if kk == k]
        nx.draw_networkx_edges(g, pos, edgelist=edges, ax=ax, style=kind_style[k], edge_color=kind_colour[k],
                               alpha=0.7, arrows=True, arrowsize=9, width=1.1, node_size=900,
                               connectionstyle="arc3,rad=0.08")
        ax.plot([], [], linestyle=kind_style[k], color=kind_colour[k], label=f"edge: {k}")
    for p, c in PARADIGM_COLOURS.items():
        nodes = [n for n, d in g.nodes(data=True) if d["paradigm"] == p]
        nx.draw_networkx_nodes(g, pos, nodelist=nodes, node_color=c, node_size=900, ax=ax, edgecolors="black",
                               linewidths=0.6)
        ax.scatter([], [], color=c, s=80, edgecolor="black", label=f"node: {PARADIGM_LABELS[p]}")
    nx.draw_networkx_labels(g, pos, labels={n: d["name"] for n, d in g.nodes(data=True)}, font_size=7, ax=ax)
    ax.set_yticks(range(len(families)), [f.replace("_", " ") for f in families])
    ax.set_xticks(range(len(years)), [str(y) for y in years])
    ax.tick_params(left=True, bottom=True, labelleft=True, labelbottom=True)
    ax.set_xlabel("year of the method's paper (ordinal axis)")
    ax.set_ylabel("family")
    ax.set_title("The method graph: arrows point from a method to what it derives from")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return fig


def census_figure(table: pd.DataFrame | None = None) -> Figure:
    """Figure 7: literature census per domain and year: the survey's counts, and a user's corpus if given."""
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    colours = {"general": "#0072B2", "math": "#D55E00", "agentic": "#009E73", "code": "#CC79A7"}
    for d, counts in SURVEY_CENSUS.items():
        ax.plot(list(counts), list(counts.values()), "-o", color=colours[d], label=f"{d} (survey)")
    if table is not None and len(table):
        for d, t in table.groupby("domain"):
            ax.plot(t["year"], t["projected"], "--s", color=colours.get(d, "black"), label=f"{d} (your corpus)")
    ax.set_xticks(sorted(next(iter(SURVEY_CENSUS.values()))))
    ax.set_xlabel("year (2025 projected from January-June)")
    ax.set_ylabel("papers mentioning a domain benchmark >= k times")
    ax.set_title("Literature census (survey Appendix B rule, k = 5)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig
