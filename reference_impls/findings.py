"""`sftrl findings`: published claims about SFT and RL re-tested as declared experiments.

A finding is declared here, in code, BEFORE any run: the claim, the paper (arXiv id) and what it
states (quoted from the sources named), our set-up (task, knobs, base, arms of entries, seeds,
budget, the k of pass@k) and the statistic that decides the verdict, with its thresholds. Then

    sftrl findings run NAME [--quick] --out DIR

runs each arm as an arena (reference_impls/arena.py: one warm-start base, paired seeds, one
budget), measures the base and every final model on the task's evaluation problems (pass@k by the
unbiased estimator, core/evaluate.py; greedy accuracy from the arena), and a verdict function reads
those numbers and returns reproduced | partly | not_reproduced. Nothing is decided by hand; a task
is not tuned after a run. Output: DIR/finding.json, DIR/finding.md, DIR/finding.png, DIR/<arm>/
(the arenas and their Runs; model weights stay there, they are not results).

Intervals are 95 % t-intervals over seeds of paired differences (same seed: same base, same
evaluation problems). 'higher' / 'lower' means the interval excludes 0, 'tie' that it does not.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

# ------------------------------------------------------------------------------ declarations


class Arm(BaseModel):
    """One arena of a finding: entries trained from the shared base, with these task options."""

    model_config = ConfigDict(extra="forbid")
    label: str
    entries: list[str]
    task_options: dict[str, Any] = {}  # added to the finding's task options


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    claim: str
    arxiv: str
    sources: list[str]  # where `paper_says` was read
    paper_says: list[str]  # the paper's statements and numbers, as the sources state them
    setup: str  # our design and where it departs from the paper's
    task: str = "ladder"
    task_options: dict[str, Any] = {}
    base_steps: int = 600
    arms: list[Arm]
    seeds: int = 5
    budget: int = 12800
    ks: list[int] = [1, 4, 16, 64, 256]  # pass@k measured on the base and every final model
    quick: dict[str, Any] = {"seeds": 2, "budget": 3200, "ks": [1, 4, 16, 64]}
    by_level: bool = False  # also measure pass@k per difficulty level (task problems' `meta`)
    statistic: str  # what decides, with thresholds, in words
    decide: str  # name of the verdict function in VERDICTS
    not_runnable: str | None = None  # why `findings run` cannot run it yet

    def sized(self, quick: bool) -> Finding:
        return self.model_copy(update=self.quick) if quick else self


LADDER = {"max_id": 3, "ood_extra": 1, "sliver": 0.01}
LADDER_NOTE = ("Task `ladder` (reference_impls/tasks/ladder.py): chains of single-digit additions, difficulty = number "
               "of `+`; ID = difficulties 1-3, OOD = 4 (and more where stated); the warm-start base (tiny preset, "
               "2-layer x 64-wide Llama, ~138 k parameters, 600 SFT steps on the training distribution, seed 0) sees a "
               "1 % sliver of the OOD difficulties, which puts it off zero OOD. No chain of thought: the answer is the sum.")

FINDINGS: dict[str, Finding] = {f.name: f for f in [
    Finding(
        name="limit-of-rlvr",
        title="Does RL really incentivize reasoning beyond the base model?",
        claim="RLVR-trained models beat their base at pass@1, but the base overtakes them at large k.",
        arxiv="2504.13837",
        sources=["https://arxiv.org/abs/2504.13837", "https://limit-of-rlvr.github.io/"],
        paper_says=[
            "abstract: 'while RLVR-trained models outperform their base models at smaller values of k (e.g., k=1), "
            "base models achieve higher pass@k score when k is large'",
            "project page: RL-trained models 'excel at low k (e.g., pass@1) but are consistently outperformed by base "
            "models at high k (e.g., pass@256)'",
        ],
        setup=LADDER_NOTE + " Arm: GRPO (reference_impls/methods/grpo.py, defaults: group 8, lr 3e-4, beta 0.04) from "
              "the base for 12,800 completions (200 steps; full run). pass@k on the ID problems (the training distribution, "
              "as the paper evaluates RL on its own domain), n = 256 samples per problem at T = 1.",
        task_options=LADDER, arms=[Arm(label="grpo", entries=["grpo"])],
        statistic="On ID problems, paired by seed: d1 = pass@1(GRPO) - pass@1(base) and dK = pass@K(GRPO) - pass@K(base) "
                  "with K the largest k (256; 64 with --quick). reproduced: d1 higher AND dK lower; partly: d1 higher "
                  "and dK a tie (RL's edge vanishes at large k), or d1 a tie and dK lower; not_reproduced otherwise.",
        decide="limit_of_rlvr"),
    Finding(
        name="edge-of-competence",
        title="RL yields real pass@k gains only when its data sit at the edge of the base's competence",
        claim="RL raises pass@k at large k (real capability, not sharpening) only when the RL data are just beyond "
              "what the base solves; RL on problems the base already solves, or far beyond it, does not.",
        arxiv="2512.07783",
        sources=["https://arxiv.org/abs/2512.07783", "https://arxiv.org/html/2512.07783"],
        paper_says=[
            "abstract: 'RL produces true capability gains (pass@128) only when pre-training leaves sufficient headroom "
            "and when RL data target the model's edge of competence, tasks at the boundary that are difficult but not "
            "yet out of reach'",
        ],
        setup=LADDER_NOTE + " Here OOD = difficulties 4-6 (the base's sliver covers 4-6). Three arms, one base: GRPO "
              "whose prompts are difficulties 1-3 (below the edge), 4 (the edge: the base is off zero there) or 6 "
              "(beyond reach); 12,800 completions each. pass@128 on the OOD problems, n = 128 per problem.",
        task_options={**LADDER, "ood_extra": 3},
        arms=[Arm(label="rl-easy", entries=["grpo"], task_options={"rl_levels": "1-3"}),
              Arm(label="rl-edge", entries=["grpo"], task_options={"rl_levels": "4"}),
              Arm(label="rl-far", entries=["grpo"], task_options={"rl_levels": "6"})],
        ks=[1, 8, 32, 128], quick={"seeds": 2, "budget": 3200, "ks": [1, 8, 32]}, by_level=True,
        statistic="On OOD problems (difficulties 4-6), paired by seed: G_arm = pass@K(arm) - pass@K(base), K = 128 "
                  "(32 with --quick). reproduced: G_edge higher than 0 AND G_edge - G_easy higher AND G_edge - G_far "
                  "higher; partly: G_edge higher than 0 and one of the two comparisons higher; not_reproduced otherwise.",
        decide="edge_of_competence"),
    Finding(
        name="sft-memorizes-rl-generalizes",
        title="SFT memorizes, RL generalizes",
        claim="From the same start and budget, RL generalises out of distribution better than SFT, which fits the "
              "training distribution.",
        arxiv="2501.17161",
        sources=["https://arxiv.org/abs/2501.17161"],
        paper_says=[
            "abstract: 'RL, especially when trained with an outcome based reward, generalizes in both the rule-based "
            "textual and visual environments. SFT, in contrast, tends to memorize the training data and struggles to "
            "generalize out-of-distribution in either scenario.' (GeneralPoints, V-IRL; the paper's own numbers are "
            "not quoted here: not read in a primary source in this session)",
        ],
        setup=LADDER_NOTE + " Arm: SFT and GRPO from the base, 12,800 rows each. DEPARTURE: our OOD axis is difficulty "
              "(longer chains), not GeneralPoints' rule variant (a rule-variant task is not built yet).",
        task_options=LADDER, arms=[Arm(label="sft-vs-grpo", entries=["sft", "grpo"])],
        statistic="Greedy OOD accuracy, paired by seed: D = OOD(GRPO) - OOD(SFT). reproduced: D higher; partly: D a "
                  "tie with mean > 0; not_reproduced: D a tie with mean <= 0, or lower.",
        decide="rl_beats_sft_ood"),
    Finding(
        name="control-shortest-path",
        title="Control: RL does not beat the best SFT on longer problems",
        claim="On longer-horizon instances than trained on, GRPO does not surpass SFT (RL stabilises training but does "
              "not expand the capability limits set by the data).",
        arxiv="2604.15306",
        sources=["https://arxiv.org/abs/2604.15306", "https://arxiv.org/html/2604.15306v1",
                 "https://github.com/privacytrustlab/PathGeneralization"],
        paper_says=[
            "abstract: 'reinforcement learning improves training stability but does not expand those limits'; models "
            "'consistently fail under length scaling due to recursive instability'",
            "official README: 'RL (GRPO) stabilizes training but does not surpass the performance ceiling of SFT'",
        ],
        setup=LADDER_NOTE + " The same arm as sft-memorizes-rl-generalizes (SFT and GRPO, 12,800 rows each): the two "
              "findings read the same kind of runs with opposite claims. OOD = longer chains, as the paper's length "
              "scaling.",
        task_options=LADDER, arms=[Arm(label="sft-vs-grpo", entries=["sft", "grpo"])],
        ks=[1, 4, 16], quick={"seeds": 2, "budget": 3200, "ks": [1, 4]},  # pass@k is not its statistic
        statistic="Greedy OOD accuracy, paired by seed: D = OOD(GRPO) - OOD(SFT). reproduced: D lower, or a tie with "
                  "mean <= 0; partly: D a tie with mean > 0; not_reproduced: D higher.",
        decide="rl_not_above_sft_ood"),
    Finding(
        name="rl-razor",
        title="RL's Razor: on-policy RL forgets less than SFT",
        claim="At matched new-task accuracy, GRPO forgets an earlier task less than SFT, and the forward KL(base || "
              "policy) on the new task predicts forgetting.",
        arxiv="2509.04259",
        sources=["https://arxiv.org/abs/2509.04259", "https://jyopari.github.io/posts/rl_razor"],
        paper_says=[
            "abstract (project page): 'even at matched new-task accuracy, RL consistently forgets less'; 'the degree of "
            "forgetting is not determined by the training algorithm itself, but by the distributional shift, namely "
            "the KL divergence between the fine-tuned and base policy when evaluated on the new task distribution'",
        ],
        setup="Declared, not yet runnable: needs a many-correct-answers new task paired with an earlier task the base "
              "already solves (forgetting = the drop on the earlier task). The metric it needs, forward "
              "KL(base || policy) on the new task, is recorded in every Run (core/evaluate.kl_to_base).",
        arms=[Arm(label="sft-vs-grpo", entries=["sft", "grpo"])],
        statistic="Paired by seed: F = forgetting(SFT) - forgetting(GRPO) (earlier-task accuracy drop, greedy) and the "
                  "Spearman correlation r between KL(base || policy) on the new task and forgetting over all runs. "
                  "reproduced: F higher AND r > 0.5; partly: one of the two; not_reproduced: neither.",
        decide="rl_razor", not_runnable="needs the many-correct-answers + earlier-task pair of tasks (not built yet)"),
]}


# ------------------------------------------------------------------------------ statistics


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """a - b paired by seed: mean, 95% half-width, word (arena.compare)."""
    from reference_impls.arena import compare

    m, hw, word = compare(a, b)
    return {"mean": m, "ci95": hw, "word": word.split(" ")[0], "n": len(a.keys() & b.keys())}


def _fmt(d: dict[str, Any], scale: float = 100.0, unit: str = " points") -> str:
    hw = "" if math.isnan(d["ci95"]) else f" ± {scale * d['ci95']:.1f}"
    return f"{scale * d['mean']:+.1f}{hw}{unit} ({d['word']})"


def _seeds(data: dict, who: str, key: str) -> dict[int, float]:
    return {int(s): v[key] for s, v in data[who].items() if key in v}


def limit_of_rlvr(f: Finding, data: dict) -> dict[str, Any]:
    K = max(f.ks)
    d1 = paired(_seeds(data, "grpo", "id pass@1"), _seeds(data, "base", "id pass@1"))
    dK = paired(_seeds(data, "grpo", f"id pass@{K}"), _seeds(data, "base", f"id pass@{K}"))
    if d1["word"] == "higher" and dK["word"] == "lower":
        v = "reproduced"
    elif (d1["word"] == "higher" and dK["word"] == "tie") or (d1["word"] == "tie" and dK["word"] == "lower"):
        v = "partly"
    else:
        v = "not_reproduced"
    return {"verdict": v, "statistics": {"d1": d1, f"d{K}": dK},
            "summary": f"ID pass@1 GRPO − base: {_fmt(d1)}; ID pass@{K} GRPO − base: {_fmt(dK)}"}


def edge_of_competence(f: Finding, data: dict) -> dict[str, Any]:
    K = max(f.ks)
    key = f"ood pass@{K}"
    gain = {a.label: {s: v - data["base"][str(s)][key] for s, v in _seeds(data, a.label, key).items()}
            for a in f.arms}
    zero = {s: 0.0 for s in gain["rl-edge"]}
    g_edge = paired(gain["rl-edge"], zero)
    vs_easy, vs_far = paired(gain["rl-edge"], gain["rl-easy"]), paired(gain["rl-edge"], gain["rl-far"])
    wins = (vs_easy["word"] == "higher") + (vs_far["word"] == "higher")
    v = ("reproduced" if g_edge["word"] == "higher" and wins == 2 else
         "partly" if g_edge["word"] == "higher" and wins == 1 else "not_reproduced")
    stats = {"G_edge": g_edge, "G_edge-G_easy": vs_easy, "G_edge-G_far": vs_far,
             **{f"G_{a.label[3:]}": paired(gain[a.label], zero) for a in f.arms if a.label != "rl-edge"}}
    return {"verdict": v, "statistics": stats,
            "summary": f"OOD pass@{K} gain over the base: edge {_fmt(g_edge)}; edge − easy {_fmt(vs_easy)}; "
                       f"edge − far {_fmt(vs_far)}"}


def _ood_gap(data: dict) -> dict[str, Any]:
    return paired(_seeds(data, "grpo", "ood greedy"), _seeds(data, "sft", "ood greedy"))


def rl_beats_sft_ood(f: Finding, data: dict) -> dict[str, Any]:
    d = _ood_gap(data)
    v = "reproduced" if d["word"] == "higher" else "partly" if d["word"] == "tie" and d["mean"] > 0 else "not_reproduced"
    return {"verdict": v, "statistics": {"D": d}, "summary": f"greedy OOD accuracy GRPO − SFT: {_fmt(d)}"}


def rl_not_above_sft_ood(f: Finding, data: dict) -> dict[str, Any]:
    d = _ood_gap(data)
    v = ("not_reproduced" if d["word"] == "higher" else "partly" if d["word"] == "tie" and d["mean"] > 0
         else "reproduced")
    return {"verdict": v, "statistics": {"D": d}, "summary": f"greedy OOD accuracy GRPO − SFT: {_fmt(d)}"}


def rl_razor(f: Finding, data: dict) -> dict[str, Any]:
    raise NotImplementedError(f.not_runnable)


VERDICTS: dict[str, Callable[[Finding, dict], dict[str, Any]]] = {
    "limit_of_rlvr": limit_of_rlvr, "edge_of_competence": edge_of_competence,
    "rl_beats_sft_ood": rl_beats_sft_ood, "rl_not_above_sft_ood": rl_not_above_sft_ood, "rl_razor": rl_razor}


# ------------------------------------------------------------------------------ measuring


def _arm_spec(f: Finding, arm: Arm):
    from reference_impls.arena import ArenaSpec

    return ArenaSpec(entries=arm.entries, seeds=f.seeds, budget=f.budget, task=f.task,
                     task_options={**f.task_options, **arm.task_options}, base_steps=f.base_steps,
                     eval_points=4, pass_k=",".join(map(str, [1, 4, 16])))


def _base_path(spec) -> Path:
    """The arena's cached warm-start base (the runner's own cache key)."""
    import dataclasses

    from reference_impls.tasks import make_task, task_key
    from reference_impls.tasks.base_model import RECIPE, warm_start

    recipe = dataclasses.replace(RECIPE, steps=spec.base_steps) if spec.base_steps else RECIPE
    key = f"{spec.task}-{task_key(spec.task, spec.task_options, None, None)}"
    return warm_start(make_task(spec.task, spec.task_options), spec.model, spec.base_seed, recipe, key=key, say=None)


def measure(model, tok, task, ks: list[int], seed: int, by_level: bool) -> dict[str, float]:
    """pass@k (fractions) and completion length on each split (and pass@max k per difficulty level), seeded."""
    import torch

    from reference_impls.core.evaluate import sampled_metrics

    torch.manual_seed(10_000 + seed)
    out: dict[str, float] = {}
    for split, short in (("in_distribution", "id"), ("out_of_distribution", "ood")):
        probs = task.eval_sets[split]
        m = sampled_metrics(model, tok, task, probs, tuple(ks), by=(lambda p: f"level{p.meta}") if by_level else None,
                            entropy=False)
        out.update({k if k.startswith("level") else f"{short} {k}": v for k, v in m.items()
                    if not k.startswith("level") or k.endswith(f"pass@{max(ks)}")})
    return out


def _final_model(run_dir: Path) -> Path:
    stages = sorted(run_dir.glob("stage-*/model"), key=lambda p: int(p.parent.name.split("-")[1]))
    return stages[-1]


def run_finding(name: str, out: Path, quick: bool = False, progress: bool = False,
                log: Callable[[str], None] = print, arenas: Path | None = None) -> dict[str, Any]:
    """Run (or resume) each arm's arena under `arenas` (default: `out`), measure, decide, write.
    Two findings with the same arm (e.g. a claim and its control) can share `arenas`: finished runs
    are reused, never retrained."""
    from reference_impls.arena import arena
    from reference_impls.core.model import load_model
    from reference_impls.core.record import git_commit, write_atomic
    from reference_impls.tasks import make_task

    f = FINDINGS[name].sized(quick)
    if f.not_runnable:
        raise ValueError(f"finding {name!r} cannot run yet: {f.not_runnable}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arenas = Path(arenas) if arenas is not None else out
    t0 = time.time()
    data: dict[str, dict[str, dict[str, float]]] = {"base": {}}
    cache_path = out / "measured.json"  # measurements done so far: an interrupted finding keeps them
    cache: dict[str, dict[str, float]] = json.loads(cache_path.read_text()) if cache_path.exists() else {}

    def measured(key: str, path: Path, task, seed: int) -> dict[str, float]:
        key = f"{key}|seed {seed}|ks {f.ks}|by_level {f.by_level}"
        if key not in cache:
            model, tok = load_model(str(path), chars=task.alphabet())
            cache[key] = measure(model, tok, task, f.ks, seed, f.by_level)
            write_atomic(cache_path, json.dumps(cache, indent=1))
        return dict(cache[key])

    states, base_paths = {}, []
    for arm in f.arms:
        spec = _arm_spec(f, arm)
        log(f"finding {name}: arm {arm.label} ({', '.join(arm.entries)}; {f.seeds} seeds, budget {f.budget})")
        state = arena(spec, arenas / arm.label, progress=progress, command=f"sftrl findings run {name}" + (" --quick" if quick else ""),
                      log=log)
        states[arm.label] = {"table": state["table"], "runs": state["runs"]}
        task = make_task(spec.task, spec.task_options)
        base_path = _base_path(spec)
        base_paths.append(str(base_path))
        if not data["base"]:  # one base for every arm (same recipe, data and seed; checked below)
            for s in range(f.seeds):
                log(f"finding {name}: measuring the base (seed {s})")
                data["base"][str(s)] = measured(f"base {base_path.name}", base_path, task, s)
        for runs in state["runs"].values():  # the base's greedy accuracy: each run's starting evaluation
            for r in runs:
                if "start_in_distribution" in r and str(r["seed"]) in data["base"]:
                    data["base"][str(r["seed"])].setdefault("id greedy", r["start_in_distribution"] / 100)
                    data["base"][str(r["seed"])].setdefault("ood greedy", r["start_out_of_distribution"] / 100)
        for entry, runs in state["runs"].items():
            who = entry if len(f.arms) == 1 else arm.label
            for r in runs:
                if r["status"] != "finished":
                    continue
                log(f"finding {name}: measuring {who} seed {r['seed']}")
                m = measured(r["run"], _final_model(arenas / arm.label / "runs" / r["run"]), task, r["seed"])
                m.update({"id greedy": r["in_distribution"] / 100, "ood greedy": r["out_of_distribution"] / 100,
                          **({"kl_to_base": r["sampled"]["kl_to_base in_distribution"]}
                             if "kl_to_base in_distribution" in r.get("sampled", {}) else {})})
                data.setdefault(who, {})[str(r["seed"])] = m
    starts = {a: sorted({round(r.get("start_in_distribution", math.nan), 3) for r in v["runs"][e]})
              for a, v in states.items() for e in v["runs"]}
    verdict = VERDICTS[f.decide](f, data)
    result = {"finding": f.model_dump(), "quick": quick, "verdict": verdict["verdict"], "summary": verdict["summary"],
              "statistics": verdict["statistics"], "per_seed": data, "arenas": states,
              "base_check": {"paths": base_paths, "start_id_accuracy_by_arm": starts},
              "wall_s": time.time() - t0, "git_commit": git_commit(),
              "command": f"sftrl findings run {name}" + (" --quick" if quick else "") + f" --out {out}"
                         + (f" --arenas {arenas}" if arenas != out else "")}
    write_atomic(out / "finding.json", json.dumps(result, indent=1, default=str))
    figure(result).savefig(out / "finding.png", dpi=120)
    (out / "finding.md").write_text(report(result), encoding="utf-8")
    return result


# ------------------------------------------------------------------------------ reporting


def _mean_ci(xs: list[float]) -> tuple[float, float]:
    from reference_impls.arena import mean_ci

    return mean_ci(xs)


def _cell(data: dict, who: str, key: str) -> str:
    xs = [v[key] for v in data.get(who, {}).values() if key in v]
    if not xs:
        return "—"
    m, hw = _mean_ci(xs)
    scale = 1.0 if key == "kl_to_base" else 100.0
    return f"{scale * m:.1f}" + ("" if math.isnan(hw) else f" ± {scale * hw:.1f}")


def report(res: dict[str, Any]) -> str:
    f = Finding.model_validate(res["finding"])
    data = res["per_seed"]
    who = list(data)
    keys = [f"id pass@{k}" for k in f.ks] + [f"ood pass@{k}" for k in f.ks] + ["id greedy", "ood greedy", "kl_to_base"]
    keys += sorted({k for v in data.values() for s in v.values() for k in s if k.startswith("level")})
    lines = [f"# Finding: {f.name} — {f.title}", "",
             f"**Verdict: {res['verdict']}**" + (" (quick run: fewer seeds and a smaller budget)" if res["quick"] else ""),
             "", f"{res['summary']}.", "",
             f"## Claim (arXiv {f.arxiv})", "", f.claim, "", "What the paper says (read in "
             + ", ".join(f.sources) + "):", "", *[f"- {s}" for s in f.paper_says], "",
             "## Our set-up", "", f.setup, "",
             f"Seeds {f.seeds}; budget {f.budget:,} training rows per entry; pass@k from n = {max(f.ks)} samples per "
             "problem at T = 1 with the unbiased estimator (Chen et al. 2021), scored by the task's exact-match "
             "checker (not a training reward).", "",
             "## The statistic (declared before the run)", "", f.statistic, "",
             "## Our numbers", "", "Mean ± 95 % t-interval over seeds; pass@k and greedy accuracy in %, KL(base‖policy) "
             "in nats per prompt (ID prompts, exact per token over base samples).", "",
             "| metric | " + " | ".join(who) + " |", "|" + " --- |" * (len(who) + 1)]
    for k in keys:
        if any(k in s for v in data.values() for s in v.values()):
            lines.append(f"| {k} | " + " | ".join(_cell(data, w, k) for w in who) + " |")
    lines += ["", "Deciding statistics (paired by seed):", ""]
    for k, d in res["statistics"].items():
        lines.append(f"- {k}: {_fmt(d)} over {d['n']} seeds")
    lines += ["", "![finding](finding.png)", "",
              f"Command: `{res['command']}`; wall-clock {res['wall_s'] / 60:.1f} min on this machine (2 shared CPU "
              f"cores); commit {res['git_commit']}.", "",
              "Tiny models on a synthetic task: a statement about this set-up, not about LLMs at large.", ""]
    return "\n".join(lines)


def figure(res: dict[str, Any]):
    """Left: pass@k against k (ID solid, OOD dashed), mean over seeds with 95% bands. Right: per-level
    pass@K when measured, else greedy ID/OOD accuracy bars."""
    import matplotlib.pyplot as plt

    f = Finding.model_validate(res["finding"])
    data = res["per_seed"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    cmap = plt.get_cmap("tab10")
    for i, who in enumerate(data):
        for split, ls in (("id", "-"), ("ood", "--")):
            stats = [_mean_ci([v[f"{split} pass@{k}"] for v in data[who].values()]) for k in f.ks]
            m = [100 * s[0] for s in stats]
            hw = [0 if math.isnan(s[1]) else 100 * s[1] for s in stats]
            ax.plot(f.ks, m, ls, marker="o", ms=3, color=cmap(i), label=f"{who} {split.upper()}")
            ax.fill_between(f.ks, [a - b for a, b in zip(m, hw, strict=True)], [a + b for a, b in zip(m, hw, strict=True)], color=cmap(i), alpha=0.15)
    ax.set(xscale="log", xlabel="k", ylabel="pass@k (%)", ylim=(0, 100), title="pass@k (unbiased), mean ± 95% CI")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    levels = sorted({k for v in data.values() for s in v.values() for k in s if k.startswith("level")},
                    key=lambda k: int(k.split()[0][5:]))
    keys = levels or ["id greedy", "ood greedy"]
    width = 0.8 / len(data)
    for i, who in enumerate(data):
        stats = [_mean_ci([v[k] for v in data[who].values() if k in v]) for k in keys]
        bx.bar([j + i * width for j in range(len(keys))], [100 * (0 if math.isnan(s[0]) else s[0]) for s in stats],
               width, yerr=[0 if math.isnan(s[1]) else 100 * s[1] for s in stats], capsize=3, color=cmap(i), label=who)
    bx.set_xticks([j + width * (len(data) - 1) / 2 for j in range(len(keys))], keys)
    bx.set(ylabel="%", ylim=(0, 100), title="per difficulty level" if levels else "greedy accuracy")
    bx.legend(fontsize=8)
    bx.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{f.name} (arXiv {f.arxiv}): verdict {res['verdict']}")
    return fig


def table(root: Path) -> str:
    """A Markdown table of every ROOT/*/finding.json: finding, paper, its claim, our numbers, verdict."""
    lines = ["| finding | paper | the paper says | ours (deciding statistic, 95 % CI over seeds) | verdict |",
             "| --- | --- | --- | --- | --- |"]
    for p in sorted(Path(root).glob("*/finding.json")):
        r = json.loads(p.read_text())
        f = r["finding"]
        said = f["paper_says"][0].replace("|", "/")
        lines.append(f"| [{f['name']}]({p.parent.name}/finding.md) | arXiv {f['arxiv']} | {said} | {r['summary']} "
                     f"({len(r['per_seed'].get('base', {})) or '?'} seeds{', quick' if r['quick'] else ''}) "
                     f"| {'quick run only: ' if r['quick'] else ''}**{r['verdict']}** |")
    return "\n".join(lines) + "\n"
