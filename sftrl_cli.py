"""`sftrl`: the command line over the taxonomy, the catalogue, the trend figures and the runs.

Exit codes: 0 success, 1 invalid data (every problem is listed), 2 usage error.
Torch is imported only by `sftrl run` / `sftrl runs`.
Start-up time (issue 16): rich is imported on the first print, its Table only for a table, and the
annotations below are evaluated once at import (no `from __future__ import annotations`: typer would
evaluate every command's annotation strings twice, on every call).
"""

import gc
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from taxonomy.loading import DataError
from taxonomy.registry import DATA_ENV

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    help="SFT vs RL post-training: methods, their graph, the studies that use them, trends, runs.\n\n"
    "Examples:\n\n  sftrl methods list --paradigm hybrid\n\n  sftrl graph lineage dft\n\n"
    "  sftrl studies --domain math --year 2025 --paradigm hybrid\n\n  sftrl validate",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
methods_app = typer.Typer(help="The method registry (data/methods.yaml).", no_args_is_help=True)
graph_app = typer.Typer(help="The method graph: lineage, descendants, paths, exports.", no_args_is_help=True)
app.add_typer(methods_app, name="methods")
app.add_typer(graph_app, name="graph")


class _Console:
    """A rich Console made on first use (`sftrl --help` prints nothing through it)."""

    def __init__(self, **settings: object):
        self._settings, self._console = settings, None

    def get(self) -> "Console":
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._settings)
        return self._console

    def print(self, *objects: object, **kwargs: object) -> None:
        self.get().print(*objects, **kwargs)


out = _Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)  # lines (paths) never wrapped; tables fit the width
err = _Console(stderr=True, soft_wrap=True)

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", envvar=DATA_ENV, help="Catalogue directory (default: the built-in data/).",
                 file_okay=False, dir_okay=True),
]


class Fmt(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"
    bibtex = "bibtex"


FmtOpt = Annotated[Fmt, typer.Option("--format", "-f", help="Output format.")]


def _fail_data(e: DataError) -> None:
    err.print(f"[bold red]invalid data[/]: {len(e.problems)} problem(s)", highlight=False)
    for p in e.problems:
        err.print(f"  {p}", markup=False, highlight=False)
    raise typer.Exit(1)


def _usage(msg: str) -> None:
    err.print(f"error: {msg}", markup=False, highlight=False)
    raise typer.Exit(2)


def _data_dir(data: Path | None) -> None:
    if data is not None and not data.is_dir():
        _usage(f"--data {data}: no such folder (expected a catalogue folder with methods.yaml and studies/)")


def _catalog(data: Path | None):
    from catalog import Catalog

    _data_dir(data)
    try:
        return Catalog.load(data)
    except DataError as e:
        _fail_data(e)


def _registry(data: Path | None):
    from taxonomy.registry import load_registry

    _data_dir(data)
    try:
        return load_registry(data)
    except DataError as e:
        _fail_data(e)


def _emit(df, fmt: Fmt, title: str | None = None, columns: list[str] | None = None) -> None:
    from catalog import export

    if fmt is Fmt.table:
        from rich.table import Table

        shown = df[columns] if columns else df
        t = Table(title=title, show_lines=False, header_style="bold")
        for c in shown.columns:
            t.add_column(str(c), overflow="fold")
        for row in shown.itertuples(index=False):
            t.add_row(*("; ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else str(v)) for v in row))
        out.print(t)
        out.print(f"{len(df)} row(s)", style="dim")
    elif fmt is Fmt.bibtex and not {"arxiv", "title"} <= set(df.columns):
        _usage("--format bibtex applies to studies only (sftrl studies --format bibtex)")
    else:
        sys.stdout.write(export.FORMATS[fmt.value](df))


# ---------------------------------------------------------------------------- methods


def _method_options(method: str) -> list[str]:
    """Lines listing a method's options (its Config fields), or its stages for a pipeline method."""
    import importlib

    from reference_impls.core.options import options
    from taxonomy.registry import load_registry

    m = load_registry()[method]
    mod = importlib.import_module(m.impl)
    if hasattr(mod, "PIPELINE"):
        return [f"{method} is a pipeline: {' -> '.join(mod.PIPELINE)} (set a stage's option with --set STAGE.KEY=V)"]
    lines = [f"options of {method} (--set KEY=VALUE, or --set {method}.KEY=VALUE in a pipeline):"]
    for o in options(mod.Config):
        lines.append(f"  {o.name:18} {o.type:22} default {o.default!r:12} {o.help}")
    lines.append(f"signals it needs from the task: {', '.join(sorted(getattr(mod, 'NEEDS', ())))}")
    return lines


@methods_app.command("list")
def methods_list(
    paradigm: Annotated[str | None, typer.Option(help="sft | rl | hybrid")] = None,
    family: Annotated[str | None, typer.Option(help="e.g. policy_gradient, offline_preference, sft_to_rl")] = None,
    signal: Annotated[str | None, typer.Option(help="e.g. demonstrations, verifiable_reward")] = None,
    implemented: Annotated[bool, typer.Option("--implemented", help="Only methods with a reference implementation.")] = False,
    fmt: FmtOpt = Fmt.table,
    data: DataOpt = None,
) -> None:
    """List methods, optionally filtered.

    Example: sftrl methods list --paradigm hybrid --format csv
    """
    from catalog.export import Rows
    from taxonomy.schema import Family, Paradigm, Signal

    for value, enum, opt in ((paradigm, Paradigm, "--paradigm"), (family, Family, "--family"),
                             (signal, Signal, "--signal")):
        if value is not None and value.lower() not in {e.value for e in enum}:
            _usage(f"{opt}: unknown value {value!r}; expected one of {', '.join(e.value for e in enum)}")
    reg = _registry(data)
    rows = [
        {"id": m.id, "name": m.name, "paradigm": str(m.paradigm), "family": str(m.family), "year": m.year,
         "arxiv": m.arxiv or "", "signals": [str(s) for s in m.signals], "policy": str(m.policy),
         "impl": m.impl or "", "idea": m.idea}
        for m in sorted(reg.methods.values(), key=lambda m: (m.year, m.id))
        if (paradigm is None or m.paradigm == paradigm.lower())
        and (family is None or m.family == family.lower())
        and (signal is None or signal.lower() in m.signals)
        and (not implemented or m.impl)
    ]
    df = Rows(rows, ["id", "name", "paradigm", "family", "year", "arxiv", "signals", "policy", "impl", "idea"])
    _emit(df, fmt, "methods", ["id", "name", "paradigm", "family", "year", "arxiv", "impl"])


@methods_app.command("show")
def methods_show(
    method: Annotated[str, typer.Argument(help="A method id, e.g. grpo")],
    data: DataOpt = None,
) -> None:
    """Show one method with its relations.

    Example: sftrl methods show dft
    """
    from taxonomy.graph import method_graph, neighbours

    reg = _registry(data)
    try:
        m = reg[method]
    except KeyError as e:
        _usage(str(e.args[0]))
    out.print(f"[bold]{m.name}[/] — {m.full_name} ({m.year})", highlight=False)
    for k in ("id", "paradigm", "family", "arxiv", "policy", "needs_reference", "needs_value_model",
              "needs_reward_model", "impl"):
        out.print(f"  {k:19} {getattr(m, k)}", highlight=False, markup=False)
    out.print(f"  {'signals':19} {', '.join(map(str, m.signals))}", markup=False)
    out.print(f"  {'idea':19} {m.idea}", markup=False)
    out.print(f"  {'objective':19} {m.objective}", markup=False)
    out.print(f"  {'sources':19} {' '.join(m.sources)}", markup=False)
    if m.impl:
        for line in _method_options(m.id):
            out.print(line, markup=False, highlight=False)
    rel = neighbours(method_graph(reg), m.id)
    if rel:
        out.print("relations:")
        for r in rel:
            out.print(f"  {r['source']} --{r['kind']}--> {r['target']}: {r['note']} [{r['citation']}]", markup=False)


# ---------------------------------------------------------------------------- graph


@graph_app.command("lineage")
def graph_lineage(
    method: Annotated[str, typer.Argument(help="A method id")],
    descendants_: Annotated[bool, typer.Option("--descendants", help="Show what derives from it instead.")] = False,
    data: DataOpt = None,
) -> None:
    """Ancestors of a method (what it derives from), oldest first.

    Example: sftrl graph lineage luffy
    """
    from taxonomy.graph import descendants, lineage, method_graph

    g = method_graph(_registry(data))
    try:
        ids = (descendants if descendants_ else lineage)(g, method)
    except KeyError as e:
        _usage(str(e.args[0]))
    label = "descendants" if descendants_ else "lineage"
    out.print(f"{label} of {method}: {len(ids)} method(s)", markup=False)
    for i in ids:
        n = g.nodes[i]
        out.print(f"  {n['year']}  {i:18} {n['name']} [{n['paradigm']}]", markup=False)


@graph_app.command("neighbours")
def graph_neighbours(
    method: Annotated[str, typer.Argument(help="A method id")],
    kind: Annotated[str | None, typer.Option(help="Only edges of this kind, e.g. removes_component")] = None,
    fmt: FmtOpt = Fmt.table,
    data: DataOpt = None,
) -> None:
    """Relations touching a method, in both directions, optionally of one kind.

    Example: sftrl graph neighbours ppo --kind removes_component
    """
    from catalog.export import Rows
    from taxonomy.graph import method_graph, neighbours
    from taxonomy.schema import RelationKind

    if kind is not None and kind not in {k.value for k in RelationKind}:
        _usage(f"unknown kind {kind!r}; expected one of {', '.join(k.value for k in RelationKind)}")
    try:
        rows = neighbours(method_graph(_registry(data)), method, kind)
    except KeyError as e:
        _usage(str(e.args[0]))
    _emit(Rows(rows, ["source", "kind", "target", "note", "citation"]), fmt, f"relations of {method}")


@graph_app.command("path")
def graph_path(
    a: Annotated[str, typer.Argument(help="From method id")],
    b: Annotated[str, typer.Argument(help="To method id")],
    data: DataOpt = None,
) -> None:
    """Shortest chain of relations between two methods.

    Example: sftrl graph path dft grpo
    """
    from taxonomy.graph import NoPath, method_graph, path

    g = method_graph(_registry(data))
    try:
        steps = path(g, a, b)
    except KeyError as e:
        _usage(str(e.args[0]))
    except NoPath:
        out.print(f"no path between {a} and {b}")
        return
    for s in steps:
        out.print(f"  {s['source']} --{s['kind']}--> {s['target']}: {s['note']}", markup=False)


@graph_app.command("export")
def graph_export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="mermaid | dot | graphml | json")] = "mermaid",
    paradigm: Annotated[list[str] | None, typer.Option(help="Keep only these paradigms (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("--out", "-o", help="File to write (default: stdout).")] = None,
    data: DataOpt = None,
) -> None:
    """Export the graph.

    Example: sftrl graph export --format mermaid --paradigm hybrid -o graph.mmd
    """
    from taxonomy.graph import EXPORTS, by_paradigm, method_graph

    if fmt not in EXPORTS:
        _usage(f"unknown format {fmt!r}; expected one of {', '.join(EXPORTS)}")
    if bad := [p for p in paradigm or [] if p not in ("sft", "rl", "hybrid")]:
        _usage(f"--paradigm: unknown value {bad[0]!r}; expected one of sft, rl, hybrid")
    g = method_graph(_registry(data))
    if paradigm:
        g = by_paradigm(g, paradigm)
    text = EXPORTS[fmt](g)
    if output:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as e:
            _usage(f"--out {output}: cannot write it ({e.strerror or e})")
        err.print(f"wrote {output} ({g.number_of_nodes()} nodes, {g.number_of_edges()} edges)", markup=False)
    else:
        sys.stdout.write(text)


# ---------------------------------------------------------------------------- studies


@app.command("studies")
def studies(
    domain: Annotated[list[str] | None, typer.Option(help="general | math | agentic | code (repeatable)")] = None,
    year: Annotated[list[int] | None, typer.Option(help="First-version year (repeatable)")] = None,
    paradigm: Annotated[list[str] | None, typer.Option(help="sft | rl | hybrid (derived from the pipeline)")] = None,
    method: Annotated[str | None, typer.Option(help="A method id used in the pipeline")] = None,
    descendants_: Annotated[bool, typer.Option("--descendants", help="With --method: also methods derived from it.")] = False,
    source: Annotated[str | None, typer.Option(help="A data source, e.g. proprietary_model")] = None,
    base_model: Annotated[str | None, typer.Option(help="Substring of a base model, e.g. qwen")] = None,
    text: Annotated[str | None, typer.Option("--text", "-t", help="Substring of title / id / pipeline")] = None,
    results: Annotated[bool, typer.Option("--results", help="Show the reported results of the matching studies.")] = False,
    runs: Annotated[Path | None, typer.Option("--runs", help="With --results: also the measured results of runs in this folder that replicate a matching study (sftrl replicate)")] = None,
    fmt: FmtOpt = Fmt.table,
    data: DataOpt = None,
) -> None:
    """Query the catalogue of application studies.

    Example: sftrl studies --domain math --year 2025 --method grpo --descendants --format csv
    """
    from catalog.catalog import RESULT_COLUMNS
    from catalog.export import Rows

    if descendants_ and method is None:
        _usage("--descendants needs --method (e.g. --method grpo --descendants)")
    cat = _catalog(data)
    try:
        df = cat.select(domain=domain or None, year=year or None, paradigm=paradigm or None, method=method,
                        include_descendants=descendants_, source=source, base_model=base_model, text=text)
    except (KeyError, ValueError) as e:
        _usage(str(e.args[0]))
    if results:
        ids = {r["id"] for r in df.records}
        rows = [r for r in cat.result_records() if r["study"] in ids]
        if runs is not None:  # replications: measured numbers beside the reported ones
            from catalog.runs import load_runs, runs_results

            rs, bad = load_runs(runs)
            for b in bad:
                err.print(f"warning: {b}", markup=False)
            measured = runs_results([r for r in rs if r.replicates in ids], cat)
            rows += [{k: (None if v != v else v) for k, v in r.items() if k in RESULT_COLUMNS}
                     for r in measured.to_dict("records")]
        res = Rows(rows, RESULT_COLUMNS)
        _emit(res, fmt, "reported and measured results" if runs else "reported results",
              ["study", "origin", "benchmark", "metric", "value", "model"] if runs else
              ["study", "benchmark", "metric", "value", "model"])
        return
    _emit(df, fmt, "studies", ["id", "year", "domain", "paradigm", "pipeline", "title"])


@app.command("validate")
def validate(data: DataOpt = None) -> None:
    """Check every data file at once; list every problem with file, line, entry and field.

    Exit 0 if clean, 1 otherwise.  Example: sftrl validate --data my_catalogue/
    """
    from catalog.catalog import check_catalog
    from taxonomy.registry import default_data_dir

    d = data or default_data_dir()
    if not d.is_dir():
        _usage(f"no such data directory: {d}")
    reg, studies_, problems = check_catalog(d)
    if problems:
        _fail_data(DataError(problems))
    out.print(f"ok: {len(reg.methods)} methods, {len(reg.relations)} relations, {len(studies_)} studies "
              f"in {d}", markup=False, highlight=False)


@app.command("trends")
def trends_cmd(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for figures, CSVs and trends.md")] = Path("out/trends"),
    fmt: Annotated[str, typer.Option("--format", "-f", help="png | svg | pdf")] = "png",
    domain: Annotated[list[str] | None, typer.Option(help="Restrict to a domain (repeatable)")] = None,
    year: Annotated[list[int] | None, typer.Option(help="Restrict to years (repeatable; default 2023-2025)")] = None,
    corpus: Annotated[Path | None, typer.Option(help="JSONL corpus (id, date, text) for the literature census")] = None,
    k: Annotated[int, typer.Option(help="Census: minimum mentions of one benchmark name")] = 5,
    partial_year: Annotated[int | None, typer.Option(help="Census: year to project from January-June (x2)")] = None,
    data: DataOpt = None,
) -> None:
    """Draw every trend figure, write the table behind each as CSV, and a trends.md report.

    Example: sftrl trends --out out/trends --format svg --domain math
    """
    from rich.progress import Progress

    from catalog.report import write_trends

    if fmt not in ("png", "svg", "pdf"):
        _usage(f"unknown format {fmt!r}; expected png, svg or pdf")
    if corpus is not None and not corpus.is_file():
        _usage(f"no such corpus file: {corpus}" if not corpus.exists() else f"--corpus {corpus}: not a regular file")
    if k < 1:
        _usage(f"--k must be at least 1 (got {k})")
    if out_dir.exists() and not out_dir.is_dir():
        _usage(f"--out {out_dir}: exists and is not a folder")
    cat = _catalog(data)
    try:
        with Progress(console=err.get(), transient=True) as bar:
            task = bar.add_task("drawing figures", total=7)
            paths = write_trends(cat, out_dir, fmt, domain=domain or None, years=year or None, corpus=corpus,
                                 k=k, partial_year=partial_year, progress=lambda _: bar.advance(task))
    except (KeyError, ValueError) as e:
        _usage(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    except OSError as e:
        _usage(f"--out {out_dir}: cannot write there ({e.strerror or e})")
    out.print(f"wrote {len(paths)} files to {out_dir}/ (report: {out_dir / 'trends.md'})", markup=False)


@app.command("site")
def site_cmd(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the site into: new, empty, or "
                                          "one an earlier `sftrl site` built (it is replaced)")] = Path("out/site"),
    data: DataOpt = None,
    runs: Annotated[Path, typer.Option("--runs", help="Recorded runs to show on the method pages "
                                       "(a missing folder means none)")] = Path("runs"),
    arena: Annotated[Path | None, typer.Option("--arena", help="Arena results (*/arena.json) for the trends "
                                               "page (default: the project's docs/arena/; missing means none)")] = None,
    repo_url: Annotated[str | None, typer.Option("--repo-url", help="Also link each reference file to this "
                                                 "repository, e.g. https://github.com/OWNER/sftrl")] = None,
) -> None:
    """Build the explorer: a static web site of the studies, methods, method graph, trends and runs.

    The site needs no server and no network: open OUT/index.html in a browser (file:// works), or
    publish the folder on any static host. Pages: a searchable, filterable studies table with CSV
    and BibTeX export; a page per study (pipeline, results, sources, BibTeX); a page per method
    (objective, relations, studies per year, reference code, runs); the interactive method graph;
    the trend figures with their tables.

    Example: sftrl site --out out/site --data my_catalogue/ --runs runs/
    """
    from explorer import build_site

    try:
        stats = build_site(out_dir, data, runs, repo_url=repo_url, arena_dir=arena)
    except DataError as e:
        _fail_data(e)
    except FileExistsError as e:
        _usage(str(e))
    for w in stats.warnings:
        err.print(f"warning: {w}", markup=False)
    name, size = stats.heaviest()
    out.print(f"wrote {stats.pages} pages ({stats.studies} studies, {stats.methods} methods, {stats.runs} runs) "
              f"to {out_dir}/ in {stats.seconds:.1f} s; heaviest page {name} {size / 1e6:.2f} MB with its "
              f"assets\nopen {out_dir / 'index.html'}", markup=False, highlight=False)


# Commands that read the catalogue or registry, print, and exit: no cyclic garbage collection in them
# (they allocate much and free little, so collections only cost time: ~5-10% of a call).
_SHORT_COMMANDS = ("methods", "graph", "studies", "validate")


import sftrl_cli_train  # noqa: E402,F401  (registers run, arena, replicate, runs, findings on `app`)


def main() -> None:
    from sftrl_cli_train import _print_pipeline_options

    argv = sys.argv[1:]
    if argv[:1] and argv[0] in _SHORT_COMMANDS:
        gc.disable()
    if argv[:1] == ["run"] and {"-h", "--help"} & set(argv):
        named = [a for a in argv[1:] if not a.startswith("-")][:1]
        try:
            app()
        finally:  # after typer's help, the named method's (or pipeline's) options
            if named:
                _print_pipeline_options(named[0])
    app()


if __name__ == "__main__":  # `python -m sftrl_cli` (the --nproc launcher): the importable module's app,
    import sftrl_cli  # on which sftrl_cli_train registered the training commands

    sftrl_cli.main()
