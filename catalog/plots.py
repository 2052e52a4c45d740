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
    """Figure 3: a timeline heatmap, one row per RL / preference / hybrid method, studies per year."""
    piv = table.pivot_table(index="method", columns="year", values="studies", fill_value=0, aggfunc="sum")
    piv = piv.loc[piv.sum(axis=1).sort_values(ascending=False).index]  # most used on top
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(piv) + 1.6), layout="constrained")
    im = ax.imshow(piv.to_numpy(), cmap="cividis", aspect="auto")
    ax.set_xticks(range(piv.shape[1]), [str(y) for y in piv.columns])
    ax.set_yticks(range(piv.shape[0]), [(labels or {}).get(m, m) for m in piv.index])
    vmax = piv.to_numpy().max() or 1
    for (i, j), v in np.ndenumerate(piv.to_numpy()):
        if v:
            ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=8,
                    color="black" if v > vmax * 0.6 else "white")
    ax.set_xlabel("year of first arXiv version")
    ax.set_title("Adoption of RL, preference and hybrid algorithms\n(studies using each, per year)")
    fig.colorbar(im, ax=ax, label="studies", shrink=0.6)
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
    order = [f for f in piv.sum().sort_values(ascending=False).index if f != "Other"]
    piv = piv[order + (["Other"] if "Other" in piv else [])]  # "Other" last, in grey
    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    bottom = np.zeros(len(piv))
    palette = [c for c in OKABE_ITO if c != "#999999"]
    for i, fam in enumerate(piv.columns):
        colour = "#BBBBBB" if fam == "Other" else palette[i % len(palette)]
        ax.bar([str(y) for y in piv.index], piv[fam], bottom=bottom, color=colour, edgecolor="white", linewidth=0.5,
               label=fam, hatch="//" if fam != "Other" and i >= len(palette) else None)
        bottom += piv[fam].to_numpy()
    ax.set_xlabel("year of first arXiv version")
    ax.set_ylabel("studies fine-tuning a model of the family")
    ax.set_title("Base-model families in the catalogue per year")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
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
            # a crowded cell becomes a small grid: 3 columns, or 2 where names are long
            width = 2 if any(len(_wrap(g.nodes[n]["name"])[0]) > 9 for n in ids) else 3
            cols, rows = min(len(ids), width), -(-len(ids) // width)
            for k, n in enumerate(ids):
                dx = 0.0 if cols == 1 else -0.34 + 0.68 * (k % width) / (cols - 1)
                dy = (k // width - (rows - 1) / 2) * 0.36
                pos[n] = (xpos[yr] + dx, fam_i + dy)
    fig, ax = plt.subplots(figsize=(16, 10), layout="constrained")
    kinds = sorted({k for _, _, k in g.edges(data="kind")})
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1)), (0, (5, 5))]
    colours = ["#555555", "#0072B2", "#D55E00", "#CC79A7", "#009E73", "#E69F00", "#000000", "#56B4E9"]
    for k, ls, c in zip(kinds, styles, colours, strict=False):
        edges = [(u, v) for u, v, kk in g.edges(data="kind") if kk == k]
        nx.draw_networkx_edges(g, pos, edgelist=edges, ax=ax, style=ls, edge_color=c, alpha=0.65, arrows=True,
                               arrowsize=8, width=1.0, node_size=700, connectionstyle="arc3,rad=0.06")
        ax.plot([], [], linestyle=ls, color=c, label=f"edge: {k}")
    for n, (x, y) in pos.items():
        d = g.nodes[n]
        ax.text(x, y, "\n".join(_wrap(d["name"])), ha="center", va="center", fontsize=7.5, zorder=4,
                color="white" if d["paradigm"] == "hybrid" else "black",
                bbox={"boxstyle": "round,pad=0.25", "fc": PARADIGM_COLOURS[d["paradigm"]], "ec": "black", "lw": 0.5})
    for p, c in PARADIGM_COLOURS.items():
        ax.scatter([], [], color=c, s=80, marker="s", edgecolor="black", label=f"node: {PARADIGM_LABELS[p]}")
    ax.set_xlim(-0.6, len(years) - 0.4)
    ax.set_ylim(-0.6, len(families) - 0.4)
    ax.set_yticks(range(len(families)), [f.replace("_", " ") for f in families])
    ax.set_xticks(range(len(years)), [str(y) for y in years])
    ax.tick_params(left=True, bottom=True, labelleft=True, labelbottom=True)
    ax.set_xlabel("year of the method's paper (ordinal axis)")
    ax.set_ylabel("family")
    ax.set_title("The method graph: arrows point from a method to what it derives from")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return fig


def _wrap(name: str, width: int = 13) -> list[str]:
    """Split a long label at its last space before `width` (keeps node boxes narrow)."""
    if len(name) <= width or " " not in name:
        return [name]
    cut = name.rfind(" ", 0, width + 1)
    cut = cut if cut > 0 else name.find(" ")
    return [name[:cut], *_wrap(name[cut + 1:], width)]


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


RUN_CURVES = ("loss", "reward", "kl", "entropy", "accuracy", "grad_norm")


def run_history_figure(run) -> Figure:
    """Training curves of one Run: a panel per logged quantity (loss, reward, KL, entropy, ...),
    one line per stage, against the global step (stages laid end to end)."""
    hist = pd.DataFrame(run.history)
    if hist.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no steps recorded", ha="center", va="center")
        ax.axis("off")
        return fig
    if "stage" not in hist:
        hist["stage"] = 1.0
    hist["global_step"] = range(len(hist))
    keys = [k for k in RUN_CURVES if k in hist] + sorted(
        k for k in hist if k.endswith("entropy") and k not in RUN_CURVES)
    keys = keys[:6] or ["lr"]
    methods = run.pipeline.method_ids()
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.9 * len(keys) + 0.6), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=False):
        for stage, part in hist.groupby("stage"):
            i = int(stage) - 1  # the stage's position in the Run's pipeline
            label = f"stage {int(stage)}: {methods[i] if 0 <= i < len(methods) else '?'}"
            ax.plot(part["global_step"], part[key], lw=1.2, label=label)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="best")
    axes[0, 0].set_title(f"{run.id}\n{' -> '.join(methods)} on {run.task} ({run.model}), status {run.status}",
                         fontsize=9)
    axes[-1, 0].set_xlabel("optimizer step (all stages)")
    fig.tight_layout()
    return fig
