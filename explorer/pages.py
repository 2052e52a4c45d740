"""The per-entity pages: one per study, one per method, the methods index, a reference file."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import networkx as nx

from catalog.catalog import Catalog
from explorer.html import (
    KATEX,
    KIND_COLOURS,
    KIND_HELP,
    METHOD_PARADIGM_LABELS,
    SOURCE_LABELS,
    badge,
    dl,
    e,
    ext_link,
    link,
    page,
    table,
)
from taxonomy.graph import descendants, lineage
from taxonomy.schema import Family, Method, Run, Study

R = "../"  # study and method pages live one folder below the site root


def _method_link(cat: Catalog, mid: str) -> str:
    name = cat.registry[mid].name if mid in cat.registry else mid
    return link(f"{R}methods/{mid}.html", name)


def _arxiv(aid: str | None) -> str:
    return ext_link(f"https://arxiv.org/abs/{aid}", f"arXiv:{aid}") if aid else ""


def _stage(cat: Catalog, i: int, st: Any) -> str:
    m = cat.registry[st.method]
    data = "".join(
        f'<li><span class="src">{e(SOURCE_LABELS.get(str(d.source), str(d.source)))}</span>'
        + (f" — {e(d.name)}" if d.name else "") + (f" <span class=\"muted\">({d.size:,} examples)</span>"
                                                    if d.size is not None else "") + "</li>"
        for d in st.data)
    hp = ", ".join(f"{e(k)} = {e(v)}" for k, v in st.hyperparameters.items())
    parts = [
        f'<div class="stage-head"><span class="stage-n">Stage {i}</span> {badge(str(m.paradigm), m.name)}</div>',
        f'<div class="stage-method">{_method_link(cat, st.method)} <span class="muted">{e(m.full_name)}</span></div>',
        f'<ul class="stage-data" aria-label="data">{data}</ul>' if data else '<p class="muted">no data source recorded</p>',
        f'<p class="hp"><span class="muted">hyperparameters:</span> {hp}</p>' if hp else "",
        f'<p class="note">{e(st.note)}</p>' if st.note else "",
        f'<p class="approx"><strong>Approximation:</strong> {e(st.approximation)}</p>' if st.approximation else "",
    ]
    return f'<li class="stage">{"".join(parts)}</li>'


def study_page(cat: Catalog, s: Study, bibtex: str, footer: str) -> str:
    paradigm = str(cat.paradigm(s))
    stages = "".join(_stage(cat, i, st) for i, st in enumerate(s.pipeline.stages, 1))
    facts = dl([
        ("arXiv", _arxiv(s.arxiv)),
        ("First version", e(s.date.isoformat() if s.date else s.month)),
        ("First author", e(s.first_author)),
        ("Venue", e(s.venue)),
        ("Domains", ", ".join(e(str(d)) for d in s.domains)),
        ("Base models", ", ".join(e(m) for m in s.base_models)),
        ("Paradigm", badge(paradigm) + ' <span class="muted">(derived from the pipeline)</span>'),
        ("Modality", e(str(s.modality))),
        ("Pipeline read in", e(str(s.pipeline_read).replace("_", " ")) if s.pipeline_read else ""),
    ])
    results = table(
        ["Benchmark", "Metric", "Value", "Split", "Model", "Note"],
        [[e(r.benchmark), e(r.metric), e(f"{r.value:g}{r.unit}"), e(str(r.split or "")).replace("_", " "),
          e(r.model), e(r.note)] for r in s.results],
    ) if s.results else '<p class="muted">No results recorded for this study.</p>'
    sources = "".join(f"<li>{ext_link(u, u)}</li>" for u in s.sources)
    body = f"""
<p class="crumbs">{link(R + "index.html", "Studies")} / {e(s.id)}</p>
<h1>{e(s.title)}</h1>
{facts}
{'<p class="warn">Some facts were read from a secondary summary (see sources).</p>' if s.secondary else ""}
<section aria-labelledby="h-pipe"><h2 id="h-pipe">Training pipeline</h2>
<ol class="pipeline">{stages}</ol>
{f'<p class="muted">Evidence for this pipeline, as quoted from its source:</p><blockquote class="evidence"><p>{e(s.pipeline_evidence)}</p></blockquote>' if s.pipeline_evidence else ""}
</section>
<section aria-labelledby="h-res"><h2 id="h-res">Reported results</h2>{results}</section>
<section aria-labelledby="h-src"><h2 id="h-src">Sources</h2><ul class="sources">{sources}</ul>
{f'<p class="note">{e(s.note)}</p>' if s.note else ""}</section>
<section aria-labelledby="h-bib"><h2 id="h-bib">Cite</h2>
<pre id="bibtex" class="bibtex">{e(bibtex.strip())}</pre>
<button type="button" class="btn" data-copy="#bibtex">Copy BibTeX</button> <span class="copy-status" role="status"></span>
</section>"""
    return page(s.title, body, R, "studies", footer=footer)


def _relations(cat: Catalog, mid: str, outgoing: bool) -> str:
    rels = [r for r in cat.registry.relations if (r.source if outgoing else r.target) == mid]
    if not rels:
        return '<p class="muted">None.</p>'
    rows = []
    for r in rels:
        other = r.target if outgoing else r.source
        cite = _arxiv(r.citation) if r.citation[0].isdigit() else ext_link(r.citation, "source")
        kind = (f'<span class="kind" style="--k:{KIND_COLOURS.get(str(r.kind), "#444")}" '
                f'title="{e(KIND_HELP.get(str(r.kind), ""))}">{e(str(r.kind).replace("_", " "))}</span>')
        who = (f"{e(cat.registry[mid].name)} {kind} {_method_link(cat, other)}" if outgoing
               else f"{_method_link(cat, other)} {kind} {e(cat.registry[mid].name)}")
        rows.append([who, e(r.note), cite])
    return table(["Relation", "Note (condition)", "Citation"], rows)


def _runs_table(runs: list[Run]) -> str:
    from catalog.runs import diagnostics

    rows = []
    for r in runs:
        res = "<br>".join(e(f"{x.benchmark} [{str(x.split or '').replace('_', ' ')}] {x.metric}: "
                            f"{x.value:.2f}{x.unit}") for x in r.results)
        diag = "<br>".join(e(f"{k} {last:.3g} / {mean:.3g}") for k, last, mean in diagnostics(r))
        rows.append([e(r.id), e(r.created[:19]), e(" -> ".join(r.pipeline.method_ids())), e(r.task),
                     e(r.model), e(r.seed), e(r.status), res, diag])
    return table(["Run", "Created", "Pipeline", "Task", "Model", "Seed", "Status", "Results (measured)",
                  "Diagnostics (last step / mean)"], rows)


def method_page(cat: Catalog, g: nx.MultiDiGraph, m: Method, runs: list[Run], arena_rows: list[str],
                code_href: str | None, repo_href: str | None, footer: str) -> str:
    using = [s for s in cat.studies if m.id in s.pipeline.method_ids()]
    per_year: dict[int, list[Study]] = defaultdict(list)
    for s in sorted(using, key=lambda s: (s.year, s.title.lower())):
        per_year[s.year].append(s)
    years = "".join(
        f'<h3>{y}: {len(ss)} {"study" if len(ss) == 1 else "studies"}</h3><ul class="cols">'
        + "".join(f"<li>{link(f'{R}studies/{s.id}.html', s.title)}</li>" for s in ss) + "</ul>"
        for y, ss in sorted(per_year.items())) if using else '<p class="muted">No catalogued study uses it directly.</p>'
    anc, desc = lineage(g, m.id), descendants(g, m.id)
    facts = dl([
        ("Full name", e(m.full_name)),
        ("Paradigm", badge(str(m.paradigm), METHOD_PARADIGM_LABELS[str(m.paradigm)])),
        ("Family", e(str(m.family).replace("_", " "))),
        ("Year", e(m.year)),
        ("Paper", _arxiv(m.arxiv)),
        ("Signals", ", ".join(e(str(x).replace("_", " ")) for x in m.signals)),
        ("Policy", e(str(m.policy).replace("_", "-"))),
        ("Needs", ", ".join(n for n, b in (("reference model", m.needs_reference), ("value model",
                            m.needs_value_model), ("reward model", m.needs_reward_model)) if b) or "none of reference / value / reward model"),
        ("Components", ", ".join(_method_link(cat, c) for c in m.components)),
        ("Also called", e(", ".join(m.aliases))),
        ("Sources", " · ".join(ext_link(u, u) for u in m.sources)),
    ])
    impl = (f"<p>{link(code_href, m.impl.replace('.', '/') + '.py')} (the reference implementation, "
            f"in this site)" + (f" · {ext_link(repo_href, 'on the repository')}" if repo_href else "")
            + "</p>") if code_href and m.impl else '<p class="muted">No reference implementation.</p>'
    runs_html = _runs_table(runs) if runs else (
        '<p class="muted">No recorded runs use this method (record one with <code>sftrl run '
        f'{e(m.id)}</code>, then rebuild the site).</p>')
    arena = ("<h3>Arena</h3>" + "".join(arena_rows)) if arena_rows else ""
    names = lambda ids: ", ".join(_method_link(cat, i) for i in ids) or '<span class="muted">none</span>'  # noqa: E731
    body = f"""
<p class="crumbs">{link(R + "methods/index.html", "Methods")} / {e(m.id)}</p>
<h1>{e(m.name)} <span class="muted small">{e(m.id)}</span></h1>
<p class="idea">{e(m.idea)}</p>
<section aria-labelledby="h-obj"><h2 id="h-obj">Objective</h2>
<div class="objective"><div class="math" data-tex="{e(m.objective)}" role="math" aria-label="objective of {e(m.name)}"></div></div>
<details><summary>LaTeX source</summary><pre class="tex">{e(m.objective)}</pre></details>
</section>
{facts}
<section aria-labelledby="h-rel"><h2 id="h-rel">Relations</h2>
<h3>Out: what {e(m.name)} derives from or equals</h3>{_relations(cat, m.id, True)}
<h3>In: methods related to {e(m.name)}</h3>{_relations(cat, m.id, False)}
<p><strong>Lineage</strong> (everything it derives from): {names(anc)}</p>
<p><strong>Descendants</strong> (everything derived from it): {names(desc)}</p>
<p>{link(f"{R}graph.html#{m.id}", "Show in the method graph")}</p>
</section>
<section aria-labelledby="h-st"><h2 id="h-st">Studies that use it</h2>{years}
<p>{link(f"{R}index.html#method={m.id}&desc=1", "Studies using it or a descendant")}</p></section>
<section aria-labelledby="h-impl"><h2 id="h-impl">Reference implementation and our runs</h2>{impl}
{runs_html}{arena}</section>"""
    return page(m.name, body, R, "methods", footer=footer,
                head=f'<link rel="stylesheet" href="{R}{KATEX}/katex.min.css">',
                scripts=[f"{KATEX}/katex.min.js"])


def methods_index(cat: Catalog, footer: str) -> str:
    n_using: dict[str, int] = defaultdict(int)
    for s in cat.studies:
        for mid in set(s.pipeline.method_ids()):
            n_using[mid] += 1
    order = {p: i for i, p in enumerate(("sft", "rl", "hybrid"))}
    fams = {f.value: i for i, f in enumerate(Family)}  # the survey's section order
    ms = sorted(cat.registry.methods.values(),
                key=lambda m: (order[str(m.paradigm)], fams[str(m.family)], m.year, m.name.lower()))
    rows = [[link(f"{m.id}.html", m.name), badge(str(m.paradigm), METHOD_PARADIGM_LABELS[str(m.paradigm)]),
             e(str(m.family).replace("_", " ")), e(m.year), str(n_using.get(m.id, 0)), e(m.idea)] for m in ms]
    body = (f"<h1>Methods</h1><p>{len(ms)} methods of the survey's taxonomy, by paradigm and family. "
            f"The {link(R + 'graph.html', 'method graph')} shows how they derive from each other.</p>"
            + table(["Method", "Paradigm", "Family", "Year", "Studies", "Idea"], rows, cls="methods"))
    return page("Methods", body, R, "methods", footer=footer)


def code_page(path_label: str, source: str, method: Method, footer: str) -> str:
    body = (f'<p class="crumbs">{link(R + "methods/index.html", "Methods")} / '
            f'{link(f"{R}methods/{method.id}.html", method.name)} / reference implementation</p>'
            f"<h1>{e(path_label)}</h1><pre class=\"code\"><code>{e(source)}</code></pre>")
    return page(path_label, body, R, "methods", footer=footer)
