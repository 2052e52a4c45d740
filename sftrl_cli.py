"""`sftrl`: the command line over the taxonomy, the catalogue, the trend figures and the runs.

Exit codes: 0 success, 1 invalid data (every problem is listed), 2 usage error.
Torch is imported only by `sftrl run` / `sftrl runs`.
Start-up time (issue 16): rich is imported on the first print, its Table only for a table, and the
annotations below are evaluated once at import (no `from __future__ import annotations`: typer would
evaluate every command's annotation strings twice, on every call).
"""

import gc
import signal
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


def _kv(items: list[str] | None, what: str) -> dict:
    from reference_impls.core.options import parse_value

    outd: dict = {}
    for item in items or []:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            _usage(f"{what} {item!r}: expected KEY=VALUE")
        outd[k.strip()] = parse_value(v.strip())
    return outd


def _launch(nproc: int) -> None:
    """`sftrl run ... --nproc N`: run this very command line (without --nproc) under torchrun."""
    import subprocess

    argv = sys.argv[1:]
    if "run" not in argv:
        _usage("--nproc: launch from a command line (sftrl run ... --nproc N)")
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "sftrl_cli", *args]
    raise typer.Exit(subprocess.call(cmd))


@app.command("run", context_settings={"allow_extra_args": False})
def run_cmd(
    methods: Annotated[str | None, typer.Argument(
        help="A method or a pipeline: 'sft', 'sft,grpo' or 'sft -> grpo' (sftrl methods list --implemented)")] = None,
    task: Annotated[str, typer.Option(help="addition | rg:<generator> (reasoning-gym, e.g. rg:countdown)")] = "addition",
    task_option: Annotated[list[str] | None, typer.Option("--task-option", help="Task option KEY=VALUE (repeatable), e.g. cot=true, min_numbers=3, ood_min_numbers=5")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Your dataset (JSONL/JSON/CSV/Parquet/saved HF dataset) in TRL's columns; replaces --task")] = None,
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Evaluation split for --data (default: a held-out 10%)")] = None,
    reward: Annotated[str | None, typer.Option(help="exact | math | module:function | model:PATH (default: the task's own scorer; exact for --data)")] = None,
    model: Annotated[str, typer.Option(help="'tiny' (built locally), an HF model id, or a local path")] = "tiny",
    steps: Annotated[int | None, typer.Option(help="Optimisation steps of every stage (default: each method's)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Method option KEY=VALUE, or STAGE.KEY=VALUE for one stage (repeatable): --set lr=1e-4 --set grpo.beta=0")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A pipeline YAML file (see README); command-line flags override it")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (0 .. 2^32-1)")] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | mps")] = "cpu",
    out_dir: Annotated[Path, typer.Option("--out", help="Folder where runs are recorded (one sub-folder per run)")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue an interrupted run from its folder")] = None,
    save_every: Annotated[int | None, typer.Option("--save-every", help="Checkpoint every N steps (for --resume; default: end of each stage)")] = None,
    warm: Annotated[bool | None, typer.Option("--warm/--no-warm", help="Put the cached warm-start SFT stage first (default: on the tiny preset, for methods that start from a base)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's, one per core; measured fastest here even for the tiny preset)")] = None,
    nproc: Annotated[int, typer.Option("--nproc", help="Train data-parallel in N processes (launches torchrun; gloo on CPU, nccl on CUDA: one GPU each)")] = 1,
    fsdp: Annotated[bool, typer.Option("--fsdp", help="With --nproc N: shard parameters, gradients and AdamW states over the processes (FSDP2)")] = False,
    lora: Annotated[str | None, typer.Option("--lora", help="Train LoRA adapters only, e.g. r=16,alpha=32,targets=q_proj,v_proj (needs peft)")] = None,
    pass_k: Annotated[str | None, typer.Option("--pass-k", help="k of the recorded pass@k, e.g. 1,8,64 (n = max k samples per problem; default 1,4,16; 'off': none)")] = None,
    report_to: Annotated[str | None, typer.Option("--report-to", help="Also log every step, offline, under the run folder: tensorboard, trackio, jsonl (comma-separated)")] = None,
) -> None:
    """Train a method or a pipeline of methods on a task or your data; record one Run.

    Examples:

      sftrl run sft --steps 300

      sftrl run sft,grpo --set grpo.lr=1e-4 --task rg:countdown

      sftrl run dpo --data pairs.jsonl --model Qwen/Qwen2.5-0.5B --device cuda

      sftrl run grpo --data prompts.jsonl --reward math

      sftrl run --resume runs/<run-id>

      sftrl run grpo --nproc 2      (= torchrun --nproc-per-node 2 -m sftrl_cli run grpo)

      sftrl run grpo --lora r=16,alpha=32,targets=q_proj,v_proj

    `sftrl run METHOD --help` also lists that method's options with their defaults.
    """
    import yaml

    cfg_file: dict = {}
    if config is not None:
        try:
            cfg_file = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            _usage(f"--config {config}: {e}")
        if not isinstance(cfg_file, dict):
            _usage(f"--config {config}: expected a mapping (pipeline:, task:, set:, ...)")
        known = {"pipeline", "stages", "task", "task_options", "data", "eval_data", "reward", "model", "steps",
                 "seed", "device", "set"}
        if bad := sorted(set(cfg_file) - known):
            _usage(f"--config {config}: unknown key(s) {bad}; known: {', '.join(sorted(known))}")
    stage_options: dict[str, dict] = {}
    pipeline = methods or cfg_file.get("pipeline")
    if "stages" in cfg_file:  # [{method: sft, steps: 200}, {method: grpo, lr: 1e-4}]
        st = cfg_file["stages"]
        if not isinstance(st, list) or not all(isinstance(x, dict) and "method" in x for x in st):
            _usage(f"--config {config}: stages: expected a list of mappings, each with a 'method'")
        pipeline = methods or [x["method"] for x in st]
        stage_options = {str(i + 1): {k: v for k, v in x.items() if k != "method"} for i, x in enumerate(st)}
    overrides: dict = {}
    for k, v in {**(cfg_file.get("set") or {}), **_kv(set_, "--set")}.items():
        if "." in k:
            stage, _, key = k.partition(".")
            stage_options.setdefault(stage, {})[key] = v
        else:
            overrides[k] = v
    if "steps" in overrides:  # --set steps=N is --steps N
        steps = steps if steps is not None else overrides.pop("steps")
        overrides.pop("steps", None)
    task_options = {**(cfg_file.get("task_options") or {}), **_kv(task_option, "--task-option")}
    if pipeline is None and resume is None:
        _usage("name a method or a pipeline (e.g. sftrl run sft, sftrl run sft,grpo), or --resume RUN_DIR")
    if nproc < 1:
        _usage(f"--nproc must be at least 1 (got {nproc})")
    if nproc > 1:  # this process only launches: torchrun starts N copies of the same command
        from reference_impls import runner

        try:  # what every worker would refuse, refused once, before any process starts
            runner.check(pipeline, steps if steps is not None else cfg_file.get("steps"), overrides,
                         stage_options, resume)
        except runner.UsageError as e:
            _usage(str(e))
        _launch(nproc)
    if threads is not None and threads < 1:
        _usage(f"--threads must be at least 1 (got {threads})")
    if steps is not None and steps < 1:
        _usage(f"--steps must be at least 1 (got {steps})")
    import torch

    model = cfg_file.get("model", model) if model == "tiny" else model
    if threads:  # default: torch's (all cores); measured 2026-11-28 on 2 idle cores, tiny preset,
        torch.set_num_threads(threads)  # 300 SFT steps: 2 threads 5.2-6.5 s, 1 thread 7.0-9.2 s
    from reference_impls import runner
    from reference_impls.tasks.dataset import DataError as UserDataError
    from reference_impls.tasks.rewards import RewardError

    signal.signal(signal.SIGTERM, _terminated)  # `kill` records the run as interrupted, like Ctrl-C
    try:
        r = runner.run(pipeline, task=cfg_file.get("task", task) if task == "addition" else task,
                       model=model, steps=steps if steps is not None else cfg_file.get("steps"),
                       seed=seed if seed else cfg_file.get("seed", 0),
                       device=device if device != "cpu" else cfg_file.get("device", "cpu"), out=out_dir,
                       task_options=task_options, data=str(data) if data else cfg_file.get("data"),
                       eval_data=str(eval_data) if eval_data else cfg_file.get("eval_data"),
                       reward=reward or cfg_file.get("reward"), stage_options=stage_options, warm=warm,
                       save_every=save_every, resume=resume, lora=lora, fsdp=fsdp, pass_k=pass_k, report_to=report_to,
                       **overrides)
    except (runner.UsageError, UserDataError) as e:
        _usage(str(e))
    except RewardError as e:
        err.print(f"error: {e}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted: the run is recorded as interrupted; continue it with --resume", markup=False)
        raise typer.Exit(130) from None
    from reference_impls.core import distributed

    if not distributed.is_main():  # under torchrun rank 0 reports
        return
    out.print(f"run {r.id}: {r.status}" + (f" ({r.message})" if r.message else ""), markup=False)
    for x in r.results:
        split = f" [{x.split}]" if x.split else ""
        out.print(f"  {x.note.split(';')[0] if x.note else ''}: {x.benchmark}{split} {x.metric}: "
                  f"{x.value:.2f}{x.unit}", markup=False)
    rdir = resume if resume is not None else out_dir / r.id
    out.print(f"recorded in {rdir / 'run.json'} (see: sftrl runs show {rdir})", markup=False)
    if r.status != "finished":
        raise typer.Exit(1)


@app.command("arena")
def arena_cmd(
    methods: Annotated[str, typer.Option("--methods", help="Entries, comma-separated: methods, or pipelines joined by '+' (sft,grpo,sft+grpo,luffy,chord)")],
    task: Annotated[str, typer.Option(help="addition | rg:<generator> (reasoning-gym)")] = "addition",
    task_option: Annotated[list[str] | None, typer.Option("--task-option", help="Task option KEY=VALUE (repeatable)")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Your dataset in TRL's columns; replaces --task")] = None,
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Evaluation split for --data")] = None,
    reward: Annotated[str | None, typer.Option(help="exact | math | module:function | model:PATH")] = None,
    model: Annotated[str, typer.Option(help="'tiny', an HF model id, or a local path")] = "tiny",
    seeds: Annotated[int, typer.Option(help="Seeds per entry (0 .. N-1); intervals need at least 2")] = 3,
    budget: Annotated[int, typer.Option(help="Training rows per entry (SFT sequences, pairs, RL completions); a pipeline splits it equally")] = 6400,
    base_steps: Annotated[int | None, typer.Option("--base-steps", help="Steps of the shared warm-start base (default 400; ~200 gives a base that mostly fails)")] = None,
    eval_points: Annotated[int, typer.Option("--eval-points", help="Evaluations per stage for the learning curves")] = 4,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Method option KEY=VALUE or METHOD.KEY=VALUE (repeatable); not steps")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | mps")] = "cpu",
    out_dir: Annotated[Path, typer.Option("--out", help="Arena folder: arena.json, arena.md, arena.png, runs/")] = Path("runs/arena"),
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's)")] = None,
    pass_k: Annotated[str | None, typer.Option("--pass-k", help="k of the recorded pass@k, e.g. 1,8,64 (default 1,4,16; 'off': none)")] = None,
) -> None:
    """Train SFT, RL and hybrid entries from one start under one budget; compare them ID and OOD.

    Writes OUT/arena.md (table + a verdict on each of the survey's claims, with the numbers),
    OUT/arena.png (ID vs OOD with 95% intervals; learning curves) and one Run per entry and seed.
    Repeat the same command to resume an interrupted arena.

    Example:

      sftrl arena --methods sft,grpo,sft+grpo,luffy,chord --seeds 3 --budget 3200
    """
    import shlex

    from reference_impls.arena import ArenaSpec, arena
    from reference_impls.runner import UsageError

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    overrides, stage_options = {}, {}
    for k, v in _kv(set_, "--set").items():
        if "." in k:
            st, _, key = k.partition(".")
            stage_options.setdefault(st, {})[key] = v
        else:
            overrides[k] = v
    entries = [e.strip() for e in methods.split(",") if e.strip()]
    try:
        spec = ArenaSpec(entries=entries, seeds=seeds, budget=budget, task=task,
                         task_options=_kv(task_option, "--task-option"), data=str(data) if data else None,
                         eval_data=str(eval_data) if eval_data else None, reward=reward, model=model, device=device,
                         base_steps=base_steps, eval_points=eval_points, stage_options=stage_options,
                         overrides=overrides, pass_k=pass_k)
    except ValueError as e:  # pydantic: name the option, say what was expected
        errs = getattr(e, "errors", lambda: [])()
        _usage("; ".join(f"--{'-'.join(map(str, x['loc'])).replace('_', '-')}: {x['msg']}" for x in errs) or str(e))
    command = "sftrl " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        state = arena(spec, out_dir, command=command, log=lambda m: err.print(m, markup=False, highlight=False))
    except UsageError as e:
        _usage(str(e))
    for c in state["claims"]:
        out.print(f"{c['claim']}: {c['verdict']}\n    {c['numbers']}", markup=False, highlight=False)
    out.print(f"report: {out_dir / 'arena.md'}   figure: {out_dir / 'arena.png'}", markup=False)


@app.command("replicate")
def replicate_cmd(
    study: Annotated[str | None, typer.Argument(help="A catalogued study id (sftrl studies lists them)")] = None,
    list_: Annotated[bool, typer.Option("--list", help="Which catalogued studies run as recorded today")] = False,
    replace: Annotated[list[str] | None, typer.Option("--replace", help="METHOD=IMPL: run IMPL for a stage method with no implementation, e.g. rl-other=grpo")] = None,
    skip_missing: Annotated[bool, typer.Option("--skip-missing", help="Leave out stages with no implementation")] = False,
    task: Annotated[str, typer.Option(help="addition | rg:<generator>")] = "addition",
    task_option: Annotated[list[str] | None, typer.Option("--task-option", help="Task option KEY=VALUE (repeatable)")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Your dataset in TRL's columns; replaces --task")] = None,
    reward: Annotated[str | None, typer.Option(help="exact | math | module:function | model:PATH")] = None,
    model: Annotated[str, typer.Option(help="'tiny' (default), an HF model id, or a local path")] = "tiny",
    steps: Annotated[int | None, typer.Option(help="Steps of every stage (default: each method's)")] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | mps")] = "cpu",
    out_dir: Annotated[Path, typer.Option("--out", help="Folder where runs are recorded")] = Path("runs"),
    catalog_dir: Annotated[Path | None, typer.Option("--catalog", envvar=DATA_ENV, help="Catalogue directory (default: the built-in data/)")] = None,
    fmt: FmtOpt = Fmt.table,
) -> None:
    """Run a catalogued study's pipeline with our implementations, on a task or dataset you name.

    The Run records `replicates: STUDY`; `sftrl studies --results` then shows its measured numbers
    beside the study's reported ones.

    Examples:

      sftrl replicate --list

      sftrl replicate deepseekmath --task rg:basic_arithmetic --steps 50

      sftrl replicate webrl --replace rl-other=grpo
    """
    from reference_impls.replicate import replicate, runnable
    from reference_impls.runner import UsageError

    cat = _catalog(catalog_dir)
    if list_:
        import pandas as pd

        rows = runnable(cat.studies)
        n = {k: sum(r["runnable"] == k for r in rows) for k in ("yes", "approximate", "no")}
        _emit(pd.DataFrame(rows), fmt, f"{n['yes']} of {len(rows)} studies run as recorded, "
              f"{n['approximate']} with approximated stages, {n['no']} need --replace/--skip-missing")
        return
    if study is None:
        _usage("name a study (sftrl replicate STUDY) or ask for --list")
    hits = [s for s in cat.studies if s.id == study]
    if not hits:
        from taxonomy.loading import suggest

        _usage(f"no study {study!r} in the catalogue{suggest(study, [s.id for s in cat.studies])}")
    repl = {k: str(v) for k, v in _kv(replace, "--replace").items()}
    try:
        r = replicate(hits[0], replace=repl, skip_missing=skip_missing, model=model, task=task,
                      task_options=_kv(task_option, "--task-option"), data=str(data) if data else None,
                      reward=reward, steps=steps, seed=seed, device=device, out=out_dir)
    except UsageError as e:
        _usage(str(e))
    for note in r.config.get("notes", []):
        out.print(f"note: {note}", markup=False)
    for x in r.results:
        out.print(f"  {(x.note or '').split(';')[0]:22} {x.benchmark} [{x.split}] {x.metric}: {x.value:.2f}{x.unit}",
                  markup=False)
    out.print(f"recorded in {out_dir / r.id / 'run.json'} (replicates {study}; sftrl studies --results --runs {out_dir})",
              markup=False)


runs_app = typer.Typer(help="Recorded runs: list them, show one with its curves.", invoke_without_command=True)
app.add_typer(runs_app, name="runs")

from reference_impls.findings_cli import findings_app  # noqa: E402  (sftrl findings: reference_impls/findings.py)

app.add_typer(findings_app, name="findings")


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # the runner records "interrupted" and the command exits 130


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix), or a run folder")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where runs are recorded")] = Path("runs"),
    figure: Annotated[Path | None, typer.Option("--figure", help="Where to write the curves (default: RUN/curves.png)")] = None,
) -> None:
    """Print a run's pipeline, config and results, and draw its loss/reward/KL/entropy curves.

    Example: sftrl runs show grpo-addition  (a prefix of the id is enough)
    """
    from catalog.plots import run_history_figure
    from catalog.runs import load_runs

    path = Path(run_id)
    if (path / "run.json").exists():
        from taxonomy.schema import Run

        try:
            run, rdir = Run.model_validate_json((path / "run.json").read_text(encoding="utf-8")), path
        except (OSError, ValueError) as e:
            _usage(f"{path / 'run.json'}: not a valid run record ({str(e).splitlines()[0]})")
    else:
        rs, _ = load_runs(out_dir)
        hits = [r for r in rs if r.id == run_id] or [r for r in rs if r.id.startswith(run_id)]
        if not hits:
            _usage(f"no run in {out_dir}/ matches {run_id!r} (sftrl runs lists them)")
        if len(hits) > 1:  # load_runs sorts newest first: a prefix means the latest such run
            err.print(f"note: {len(hits)} runs match {run_id!r}; showing the newest (others: "
                      f"{', '.join(r.id for r in hits[1:4])}{', ...' if len(hits) > 4 else ''})", markup=False)
        run, rdir = hits[0], out_dir / hits[0].id
    out.print(f"[bold]{run.id}[/]  {run.status}" + (f" ({run.message})" if run.message else ""), highlight=False)
    out.print(f"  pipeline  {' -> '.join(run.pipeline.method_ids())}", markup=False)
    out.print(f"  task      {run.task}   model {run.model}   seed {run.seed}   device {run.device}", markup=False)
    out.print(f"  hardware  {run.hardware}   commit {run.git_commit}", markup=False)
    for i, st in enumerate(run.pipeline.stages, 1):
        hp = ", ".join(f"{k}={v}" for k, v in st.hyperparameters.items() if k not in ("bf16", "fused", "save_every"))
        out.print(f"  stage {i}: {st.method}" + (f" ({st.note})" if st.note else "") + f"\n    {hp}", markup=False)
    if run.history:
        wall = sum(h.get("wall_s", 0.0) for h in run.history)
        toks = sum(h.get("tokens", 0.0) for h in run.history)
        out.print(f"  steps {len(run.history)}, {wall:.1f} s of training, {toks:,.0f} tokens", markup=False)
        keys = ("reward", "frac_reward_zero_std", "entropy", "kl", "clip_ratio_low", "clip_ratio_high",
                "completion_len", "completion_len_max", "truncated_frac")  # core/diagnostics.py
        rows = [h for h in run.history if h.get("step", 0) >= 0]
        diag = [(k, [h[k] for h in rows if k in h]) for k in keys]
        if shown := [f"{k} {v[-1]:.3g} / {sum(v) / len(v):.3g}" for k, v in diag if v]:
            out.print("  diagnostics (last step / mean over steps): " + ", ".join(shown), markup=False)
    out.print("results:")
    for x in run.results:
        out.print(f"  {(x.note or '').split(';')[0]:22} {x.benchmark} [{x.split}] {x.metric}: {x.value:.2f}{x.unit}",
                  markup=False)
    fig_path = figure or rdir / "curves.png"
    fig = run_history_figure(run)
    try:
        fig_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(fig_path, dpi=120)
    except OSError as e:  # a read-only run folder: the text above is the answer; say where to draw
        err.print(f"note: curves not written to {fig_path} ({e.strerror or e}); use --figure PATH", markup=False)
        return
    out.print(f"curves: {fig_path}", markup=False)


@runs_app.callback()
def runs_cmd(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="Where runs are recorded")] = Path("runs"),
    results: Annotated[bool, typer.Option("--results", help="Measured results in the catalogue's result columns")] = False,
    fmt: FmtOpt = Fmt.table,
) -> None:
    """List recorded runs (newest first); `sftrl runs show RUN` shows one.

    Example: sftrl runs --results --format csv
    """
    if ctx.invoked_subcommand is not None:
        return
    from catalog.runs import load_runs, runs_frame, runs_results

    rs, bad = load_runs(out_dir)
    for b in bad:
        err.print(f"warning: {b}", markup=False)
    if not rs:
        out.print(f"no runs recorded in {out_dir}/ (start one with: sftrl run sft)", markup=False)
        return
    if results:
        try:
            _emit(runs_results(rs), fmt, "measured results")
        except DataError as e:  # the registry names each run's paradigm
            _fail_data(e)
    else:
        df = runs_frame(rs)
        shown = [c for c in df.columns if c in ("id", "pipeline", "status", "steps") or c.endswith("/accuracy")
                 or c.endswith("mean_reward") or c.endswith("/preference_accuracy")]
        _emit(df.round(2), fmt, f"runs in {out_dir}", shown)


# Commands that read the catalogue or registry, print, and exit: no cyclic garbage collection in them
# (they allocate much and free little, so collections only cost time: ~5-10% of a call).
_SHORT_COMMANDS = ("methods", "graph", "studies", "validate")


def main() -> None:
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


def _print_pipeline_options(spec: str) -> None:
    import re

    from taxonomy.registry import load_registry

    reg = load_registry()
    for name in [s.strip() for s in re.split(r",|->", spec) if s.strip()]:
        if name not in reg or not reg[name].impl:
            err.print(f"(no reference implementation named {name!r})", markup=False)
            continue
        out.print("")
        for line in _method_options(name):
            out.print(line, markup=False, highlight=False)


if __name__ == "__main__":
    main()
