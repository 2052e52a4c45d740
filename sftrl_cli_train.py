"""`sftrl run`, `sftrl arena`, `sftrl replicate`, `sftrl runs` and `sftrl findings`: the training side
of the command line (sftrl_cli.py holds the app, its output helpers and the catalogue commands, and
registers these by importing this module). Torch is imported inside the commands, never at start-up."""

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from sftrl_cli import (
    DataError,
    Fmt,
    FmtOpt,
    _catalog,
    _emit,
    _fail_data,
    _method_options,
    _usage,
    app,
    err,
    out,
)
from taxonomy.registry import DATA_ENV


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
        from catalog.runs import diagnostics

        if shown := [f"{k} {last:.3g} / {mean:.3g}" for k, last, mean in diagnostics(run)]:
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

