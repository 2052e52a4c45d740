"""`sftrl arena`: SFT, RL and hybrids trained from one start under one budget, scored ID and OOD.

The survey's question (when is SFT, RL or a hybrid the better choice?) measured, not quoted:

  entry    a method (`grpo`) or a pipeline written with `+` (`sft+grpo`); commas separate entries.
  start    every entry and every seed starts from one cached warm-start base (tasks/base_model.py,
           trained once with `base_seed`; `base_steps` makes it weaker or stronger), so `grpo`
           means RL from that base and the seeds vary only the training (sampling, batches).
  budget   B training rows per entry: SFT sequences, preference pairs, RL completions (rollouts
           count as rows). A stage whose batch is b rows runs round(B_stage / b) optimizer steps; a
           pipeline splits B equally over its stages. Rows are not equal in cost (an RL row also
           costs a generation), so tokens and wall-clock seconds are reported beside them.
  score    greedy accuracy with the task's scorer on its ID and OOD splits; mean over seeds with a
           95% t-interval; learning curves from `eval_points` evaluations per stage.

OUT holds arena.json (spec, runs, table, verdicts; rewritten after every run), runs/ (one Run per
entry and seed), arena.png and arena.md. The same call with the same OUT resumes an interrupted
arena: finished runs are kept, an interrupted run is resumed from its checkpoint.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reference_impls import runner
from reference_impls.core.record import write_atomic
from reference_impls.runner import METHODS, UsageError, parse_pipeline
from taxonomy.registry import load_registry
from taxonomy.schema import Paradigm, Run, derive_paradigm

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
SPLITS = ("in_distribution", "out_of_distribution")


class ArenaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[str] = Field(min_length=1)
    seeds: int = Field(3, ge=1, le=20)
    budget: int = Field(6400, ge=1)  # training rows per entry
    task: str = "addition"
    task_options: dict[str, Any] = {}
    data: str | None = None
    eval_data: str | None = None
    reward: str | None = None
    model: str = "tiny"
    device: str = "cpu"
    base_steps: int | None = Field(None, ge=1)  # warm-start steps (None: the recipe's 400)
    base_seed: int = Field(0, ge=0)  # the one base every entry and seed starts from
    eval_points: int = Field(4, ge=0)  # evaluations per stage, for the learning curves
    stage_options: dict[str, dict[str, Any]] = {}  # {"grpo": {"lr": 1e-4}}
    overrides: dict[str, Any] = {}  # options for every stage that has them
    pass_k: str | None = None  # k of the recorded pass@k ('1,8,64'; None: core/evaluate.PASS_K; 'off': none)


def plan(entry: str, spec: ArenaSpec) -> list[tuple[str, int]]:
    """[(method, steps)] for one entry: the budget split equally over its stages."""
    stages = parse_pipeline(entry.replace("+", ","))
    out = []
    for i, m in enumerate(stages):
        opts = {**spec.overrides, **spec.stage_options.get(m, {}), **spec.stage_options.get(str(i + 1), {})}
        if "steps" in opts:
            raise UsageError("steps are set by --budget in an arena; do not --set steps")
        b = int(opts.get("batch_size", METHODS[m].Config().batch_size))
        out.append((m, max(1, round(spec.budget / len(stages) / b))))
    return out


def paradigm(entry: str) -> Paradigm:
    reg = load_registry()
    return derive_paradigm([reg[m].paradigm for m in parse_pipeline(entry.replace("+", ",")) if m != "rm"])


def _find_run(runs_dir: Path, stages: list[str], seed: int) -> Path | None:
    """This arena's run folder for (stages, seed), if one was started."""
    for spec_path in sorted(runs_dir.glob("*/spec.json")):
        s = json.loads(spec_path.read_text())
        if s["stages"] == stages and s["seed"] == seed:
            return spec_path.parent
    return None


def run_entry(spec: ArenaSpec, entry: str, seed: int, runs_dir: Path, progress: bool) -> Run:
    planned = plan(entry, spec)
    stages = [m for m, _ in planned]
    found = _find_run(runs_dir, stages, seed)
    if found is not None:
        rec = Run.model_validate_json((found / "run.json").read_text())
        if rec.status in ("finished", "stopped", "failed"):
            return rec  # done (a stopped or failed run counts as it ended: no score)
        return runner.run(resume=found, progress=progress)
    options = {k: dict(v) for k, v in spec.stage_options.items()}
    for i, (_, steps) in enumerate(planned):
        options.setdefault(str(i + 1), {})["steps"] = steps
    return runner.run(stages, task=spec.task, model=spec.model, seed=seed, device=spec.device, out=runs_dir,
                      progress=progress, task_options=spec.task_options, data=spec.data,
                      eval_data=spec.eval_data, reward=spec.reward, stage_options=options, warm=True,
                      warm_steps=spec.base_steps, warm_seed=spec.base_seed, eval_points=spec.eval_points,
                      pass_k=spec.pass_k, **spec.overrides)


# ------------------------------------------------------------------------------ reading runs


def summarise(run: Run) -> dict[str, Any]:
    """Final ID/OOD accuracy (%), the start's, what was consumed, and the learning curve."""
    final = {x.split.value: x.value for x in run.results if x.metric == "accuracy" and x.split}
    h = run.history
    start = h[0] if h and h[0].get("step") == -1.0 else {}
    curve, rows = [], 0.0
    for x in h:
        rows += x.get("rows", 0.0)
        if "eval_in_distribution" in x:
            curve.append([rows, *(100 * x.get(f"eval_{s}", math.nan) for s in SPLITS)])
    sampled = {f"{x.metric} {x.split.value}": x.value for x in run.results  # pass@k, KL to base, ...
               if x.split and x.metric.startswith(("pass@", "kl_to_base", "entropy", "length"))}
    return {"run": run.id, "seed": run.seed, "status": run.status, "sampled": sampled,
            **{s: final.get(s) for s in SPLITS},
            **{f"start_{s}": 100 * start[f"eval_{s}"] for s in SPLITS if f"eval_{s}" in start},
            "rows": rows, "tokens": sum(x.get("tokens", 0.0) for x in h),
            "wall_s": sum(x.get("wall_s", 0.0) for x in h), "curve": curve}


def mean_ci(xs: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan with one value)."""
    if not xs:
        return math.nan, math.nan
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, math.nan
    return m, T975.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))


def compare(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, str]:
    """a - b over the seeds both have, paired by seed (same seed: same evaluation, same base):
    mean difference, its 95% t half-width, and a word: 'higher' / 'lower' when the interval
    excludes 0, 'tie' when it does not."""
    d = [a[k] - b[k] for k in sorted(a.keys() & b.keys())]
    if not d:
        return math.nan, math.nan, "no common seeds"
    m, hw = mean_ci(d)
    if len(d) < 2:
        return m, hw, ("higher" if m > 0 else "lower" if m < 0 else "tie") + " (one seed: no interval)"
    return m, hw, "higher" if m - hw > 0 else "lower" if m + hw < 0 else "tie"


def table(spec: ArenaSpec, runs: dict[str, list[dict]]) -> list[dict[str, Any]]:
    rows = []
    for entry in spec.entries:
        ok = [r for r in runs.get(entry, []) if r["status"] == "finished"]
        row: dict[str, Any] = {"entry": entry, "paradigm": paradigm(entry).value, "seeds": len(ok)}
        for s in SPLITS:
            row[s], row[f"{s}_ci"] = mean_ci([r[s] for r in ok if r[s] is not None])
        for k in ("rows", "tokens", "wall_s"):
            row[k] = statistics.fmean([r[k] for r in ok]) if ok else math.nan
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ the survey's claims


def _scores(runs, entry, split) -> dict[int, float]:
    return {r["seed"]: r[split] for r in runs.get(entry, []) if r["status"] == "finished" and r[split] is not None}


def _versus(runs, pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """a − b on each split for each pair: the sentences and the words ('higher', 'tie', ...)."""
    parts, words = [], []
    for a, b in pairs:
        for split in SPLITS:
            c = compare(_scores(runs, a, split), _scores(runs, b, split))
            parts.append(f"{a} − {b} {'ID' if split == SPLITS[0] else 'OOD'}: {_fmt(*c)}")
            words.append(c[2])
    return parts, words


def _fmt(d: float, hw: float, word: str) -> str:
    return f"{d:+.1f} points" + ("" if math.isnan(hw) else f" ± {hw:.1f}") + f" ({word})"


def claims(spec: ArenaSpec, runs: dict[str, list[dict]]) -> list[dict[str, str]]:
    """One verdict per claim, with the numbers behind it: supported / against / tie / not tested."""
    par = {e: paradigm(e) for e in spec.entries if _scores(runs, e, SPLITS[0])}
    n_stages = {e: len(parse_pipeline(e.replace("+", ","))) for e in par}
    sft = [e for e in par if par[e] == Paradigm.sft]
    rl = [e for e in par if par[e] == Paradigm.rl]
    seq = [e for e in par if par[e] == Paradigm.hybrid and n_stages[e] > 1]
    single = [e for e in par if par[e] == Paradigm.hybrid and n_stages[e] == 1]
    ID, OOD = SPLITS
    out = []

    def verdict(words: list[str], want: str) -> str:
        """supported: every comparison goes the claim's way; against: any goes the other way;
        partly supported: some go its way, the rest are ties; tie: all ties."""
        caveat = " (one seed: direction only)" if any("one seed" in w for w in words) else ""
        if any(w.startswith("lower" if want == "higher" else "higher") for w in words):
            return "against" + caveat
        hits = sum(w.startswith(want) for w in words)
        return ("supported" if hits == len(words) else "partly supported" if hits else "tie") + caveat

    # 1. SFT fits the training distribution; RL generalises better out of distribution.
    if sft and rl:
        s, r = ("sft" if "sft" in sft else sft[0]), ("grpo" if "grpo" in rl else rl[0])
        di, do = compare(_scores(runs, s, ID), _scores(runs, r, ID)), compare(_scores(runs, r, OOD), _scores(runs, s, OOD))
        v = verdict([di[2], do[2]], "higher")
        out.append({"claim": "1. SFT fits ID; RL generalises better OOD (arXiv 2501.17161)", "verdict": v,
                    "numbers": f"ID {s} − {r}: {_fmt(*di)}; OOD {r} − {s}: {_fmt(*do)}"})
    else:
        out.append({"claim": "1. SFT fits ID; RL generalises better OOD", "verdict": "not tested",
                    "numbers": "needs an SFT-only and an RL-only entry"})
    # 2. SFT followed by RL beats either alone.
    parts, words = _versus(runs, [(e, alone) for e in seq
                                  for alone in dict.fromkeys(parse_pipeline(e.replace("+", ","))) if alone in par])
    out.append({"claim": "2. SFT then RL beats either alone",
                "verdict": verdict(words, "higher") if words else "not tested",
                "numbers": "; ".join(parts) or "needs a pipeline entry (e.g. sft+grpo) and its stages alone"})
    # 3. Single-stage hybrids against two-stage SFT -> RL at the same budget.
    best = max(seq, key=lambda e: statistics.fmean(_scores(runs, e, ID).values())) if seq else None
    parts, words = _versus(runs, [(e, best) for e in single] if best else [])
    out.append({"claim": "3. Single-stage hybrids vs two-stage SFT→RL, same budget",
                "verdict": verdict(words, "higher") if words else "not tested",
                "numbers": "; ".join(parts) or "needs single-stage hybrid entries and an SFT→RL pipeline"})
    # 4. Where the base mostly fails, hybrids that inject expert data learn and plain RL stalls.
    base = [r.get(f"start_{ID}") for e in par for r in runs[e] if r.get(f"start_{ID}") is not None]
    b = statistics.fmean(base) if base else math.nan
    if not (b < 20):
        out.append({"claim": "4. Base mostly fails: expert-data hybrids learn, plain RL stalls", "verdict": "not tested",
                    "numbers": f"base ID accuracy {b:.1f}% (the claim is about a base below 20%; "
                               "a weaker base: --base-steps 150)"})
    else:
        parts, words = [f"base ID accuracy {b:.1f}%"], []
        gain = {e: {r["seed"]: r[ID] - r[f"start_{ID}"] for r in runs[e] if r["status"] == "finished"} for e in par}
        for h in single:
            for r in rl:
                c = compare(gain[h], gain[r])
                parts.append(f"ID gain {h} − {r}: {_fmt(*c)}")
                words.append(c[2])
        parts += [f"{r} ID gain {statistics.fmean(gain[r].values()):+.1f}" for r in rl]
        out.append({"claim": "4. Base mostly fails: expert-data hybrids learn, plain RL stalls",
                    "verdict": verdict(words, "higher") if words else "not tested", "numbers": "; ".join(parts)})
    return out


# ------------------------------------------------------------------------------ the arena


def arena(spec: ArenaSpec, out: Path, progress: bool = True, command: str = "",
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every (entry, seed) not yet done, then write arena.json, arena.md and arena.png."""
    out = Path(out)
    state_path = out / "arena.json"
    for e in spec.entries:
        plan(e, spec)  # every entry valid before anything trains
    if state_path.exists():
        old = ArenaSpec.model_validate(json.loads(state_path.read_text())["spec"])
        if old != spec:
            raise UsageError(f"--out {out}: holds an arena with a different set-up; choose another --out "
                             "(or repeat the original command to resume it)")
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / "runs"
    todo = [(e, s) for e in spec.entries for s in range(spec.seeds)]
    runs: dict[str, list[dict]] = {}
    state: dict[str, Any] = {"spec": spec.model_dump(), "command": command, "status": "running"}
    for k, (entry, seed) in enumerate(todo, 1):
        steps = ", ".join(f"{m} {n} steps" for m, n in plan(entry, spec))
        log(f"arena [{k}/{len(todo)}] {entry} seed {seed} ({steps})")
        r = run_entry(spec, entry, seed, runs_dir, progress)
        runs.setdefault(entry, []).append(summarise(r))
        state.update(runs=runs, table=table(spec, runs))
        write_atomic(state_path, json.dumps(state, indent=1, default=str))
    state.update(status="finished", claims=claims(spec, runs))
    write_atomic(state_path, json.dumps(state, indent=1, default=str))
    arena_figure(state).savefig(out / "arena.png", dpi=130)
    (out / "arena.md").write_text(report(state), encoding="utf-8")
    return state


def _pm(m: float, hw: float) -> str:
    return "—" if math.isnan(m) else f"{m:.1f}" + ("" if math.isnan(hw) else f" ± {hw:.1f}")


def report(state: dict[str, Any]) -> str:
    s = ArenaSpec.model_validate(state["spec"])
    lines = [f"# Arena: {', '.join(s.entries)} on {s.data or s.task}", "",
             f"Command: `{state.get('command') or 'sftrl arena ...'}`", "",
             f"Model `{s.model}`; every entry and seed starts from one warm-start base "
             f"({s.base_steps or 400} SFT steps, seed {s.base_seed}); budget {s.budget:,} training rows per entry (SFT sequences, "
             f"preference pairs or RL completions; a pipeline splits it equally); {s.seeds} seed(s); "
             "scores are greedy accuracy (%) with the task's scorer, mean ± 95% t-interval over seeds. Comparisons "
             "below are paired by seed. 'train s' is wall-clock time in the training loop (evaluations "
             "excluded) on this machine, as loaded at the time.", "",
             "| entry | paradigm | seeds | ID accuracy | OOD accuracy | rows | tokens | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in state["table"]:
        lines.append(f"| {r['entry']} | {r['paradigm']} | {r['seeds']} | {_pm(r['in_distribution'], r['in_distribution_ci'])} "
                     f"| {_pm(r['out_of_distribution'], r['out_of_distribution_ci'])} | {r['rows']:,.0f} "
                     f"| {r['tokens']:,.0f} | {r['wall_s']:.0f} |")
    over = [f"{r['entry']} ({r['rows']:,.0f})" for r in state["table"] if r["rows"] > 1.05 * s.budget]
    if over:
        lines += ["", f"Rows above the budget: {', '.join(over)}: these methods add expert or off-policy "
                  "rows to the batch_size rows each step (their batch_size counts the rollouts only)."]
    lines += sampled_table(state)
    lines += ["", "## The survey's claims, as these runs show them", ""]
    for c in state.get("claims", []):
        lines.append(f"- **{c['claim']}** — *{c['verdict']}*. {c['numbers']}.")
    lines += ["", "'tie' means the 95% interval of the difference includes zero; with few seeds and a tiny "
              "model these are statements about this set-up, not about LLMs at large.", "",
              "![arena](arena.png)", ""]
    return "\n".join(lines)


def sampled_table(state: dict[str, Any]) -> list[str]:
    """Markdown lines: the final models' sampled metrics (pass@k, KL to base, entropy), mean ± 95% CI."""
    keys = sorted({k for rs in state["runs"].values() for r in rs for k in r.get("sampled", {})},
                  key=lambda k: (k.split()[1], k.startswith("pass@") and int(k.split()[0][5:]) or 10**9, k))
    if not keys:
        return []
    lines = ["", "Sampled metrics of the final models (T = 1; pass@k by the unbiased estimator, %; "
             "KL(base‖policy) in nats per prompt, ID only; entropy in nats per token):", "",
             "| entry | " + " | ".join(k.replace("in_distribution", "ID").replace("out_of_distribution", "OOD")
                                   for k in keys) + " |", "|" + " --- |" * (len(keys) + 1)]
    for entry, rs in state["runs"].items():
        ok = [r for r in rs if r["status"] == "finished"]
        cells = [_pm(*mean_ci([r["sampled"][k] for r in ok if k in r.get("sampled", {})])) for k in keys]
        lines.append(f"| {entry} | " + " | ".join(cells) + " |")
    return lines


COLOURS = {"sft": "#1f77b4", "rl": "#d62728", "hybrid": "#2ca02c"}


def arena_figure(state: dict[str, Any]):
    """Left: final ID and OOD accuracy per entry (bars, 95% intervals). Right: accuracy against rows."""
    import matplotlib.pyplot as plt

    s = ArenaSpec.model_validate(state["spec"])
    rows = [r for r in state["table"] if not math.isnan(r["in_distribution"])]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained", width_ratios=[1, 1.2])
    x = range(len(rows))
    for off, split, hatch in ((-0.2, "in_distribution", ""), (0.2, "out_of_distribution", "//")):
        ci = [0 if math.isnan(r[f"{split}_ci"]) else r[f"{split}_ci"] for r in rows]
        ax.bar([i + off for i in x], [r[split] for r in rows], 0.38, yerr=ci, capsize=3, hatch=hatch,
               color=[COLOURS[r["paradigm"]] for r in rows], edgecolor="black", linewidth=0.6,
               alpha=1.0 if split == "in_distribution" else 0.45)
    ax.set_xticks(list(x), [r["entry"] for r in rows], rotation=30, ha="right")
    for p, c in COLOURS.items():
        ax.bar([0], [0], color=c, label=p)
    ax.bar([0], [0], color="white", edgecolor="black", label="solid: ID, hatched: OOD")
    ax.set(ylabel="greedy accuracy (%)", ylim=(0, 100),
           title=f"Final accuracy, mean ± 95% CI over {s.seeds} seed(s)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    cmap = plt.get_cmap("tab10")
    for i, (entry, rs) in enumerate(state["runs"].items()):
        curves = [r["curve"] for r in rs if r["status"] == "finished" and r["curve"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        xs = [statistics.fmean(c[j][0] for c in curves) for j in range(n)]
        for col, ls in ((1, "-"), (2, "--")):
            bx.plot(xs, [statistics.fmean(c[j][col] for c in curves) for j in range(n)], ls, color=cmap(i % 10),
                    marker="o", ms=3, label=entry if col == 1 else None)
    bx.set(xlabel="training rows seen", ylabel="greedy accuracy (%)",
           title="Learning curves (solid: ID, dashed: OOD; mean over seeds)")
    bx.legend(fontsize=8, loc="best")
    bx.grid(alpha=0.3)
    fig.suptitle(f"sftrl arena on {s.data or s.task} ({s.model}), budget {s.budget:,} rows per entry")
    return fig
