"""Small HTML helpers shared by the page builders: escaping, the page shell, tables, badges."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).parent / "templates"
VENDOR = Path(__file__).parent / "vendor"
# Vendored libraries keep their versioned folder names in the site (explorer/vendor/README.md).
KATEX = "assets/vendor/" + next(VENDOR.glob("katex-*")).name
CYTOSCAPE = "assets/vendor/" + next(VENDOR.glob("cytoscape-*")).name
_SHELL = Template((TEMPLATES / "page.html").read_text(encoding="utf-8"))
NAV = (("studies", "index.html", "Studies"), ("methods", "methods/index.html", "Methods"),
       ("graph", "graph.html", "Method graph"), ("trends", "trends.html", "Trends"))

PARADIGM_LABELS = {"sft": "SFT-only", "rl": "RL-only", "hybrid": "Hybrid"}
METHOD_PARADIGM_LABELS = {"sft": "SFT", "rl": "RL / preference", "hybrid": "Hybrid (SFT + RL)"}
SOURCE_LABELS = {
    "benchmark": "benchmark / curated dataset",
    "open_weight_model": "open-weight model generated",
    "proprietary_model": "proprietary (API) model generated",
    "human_web": "human-written / web",
    "self_generated": "sampled from the policy itself",
    "rule_based": "rule-based reward (checker, tests)",
}
# What each relation kind says, read as "source <kind> target" (from taxonomy/schema.py).
KIND_HELP = {
    "extends": "adds to the target method",
    "modifies": "changes one part of the target",
    "simplifies": "is a simpler form of the target",
    "removes_component": "drops a component of the target (e.g. GRPO drops PPO's critic)",
    "special_case_of": "is a special case of the target",
    "equivalent_under": "equals the target under the condition in the note (not a derivation)",
    "combines": "a hybrid that combines the target with another parent",
    "rectifies": "corrects the target (e.g. DFT rectifies SFT's implicit reward)",
}
KIND_COLOURS = {
    "extends": "#0072B2", "modifies": "#D55E00", "simplifies": "#CC79A7", "removes_component": "#222222",
    "special_case_of": "#009E73", "equivalent_under": "#8A8A8A", "combines": "#E69F00", "rectifies": "#56B4E9",
}


def e(x: object) -> str:
    """Escape text for HTML content and attribute values."""
    return escape("" if x is None else str(x), quote=True)


def page(title: str, body: str, root: str, current: str, *, scripts: Sequence[str] = (),
         head: str = "", footer: str = "") -> str:
    """The shell every page shares: nav, main, footer; `root` is the relative path to the site root."""
    cur = ' aria-current="page"'
    nav = "\n".join(f'<a href="{root}{href}"{cur if key == current else ""}>{label}</a>'
                     for key, href, label in NAV)
    tags = "\n".join(f'<script src="{root}{s}"></script>' for s in scripts)
    return _SHELL.substitute(title=e(title), root=root, nav=nav, body=body, scripts=tags, head=head,
                             footer=footer)


def link(href: str, text: object, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<a href="{e(href)}"{c}>{e(text)}</a>'


def ext_link(href: str, text: object) -> str:
    return f'<a href="{e(href)}" rel="noopener">{e(text)}</a>'


def badge(paradigm: str, label: str | None = None) -> str:
    return f'<span class="badge p-{e(paradigm)}">{e(label or PARADIGM_LABELS.get(paradigm, paradigm))}</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], caption: str = "", cls: str = "") -> str:
    """Cells are HTML already (escape text with `e`)."""
    cap = f"<caption>{caption}</caption>" if caption else ""
    head = "".join(f'<th scope="col">{h}</th>' for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="table-wrap"><table class="{cls}">{cap}<thead><tr>{head}</tr></thead>' \
           f"<tbody>\n{body}\n</tbody></table></div>"


def dl(items: Iterable[tuple[str, str]]) -> str:
    """A definition list; values are HTML already; empty values are left out."""
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items if v) + "</dl>"
