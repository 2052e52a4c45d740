"""Run one method on one task and record it:  run("grpo", steps=20) -> taxonomy.schema.Run.

    from reference_impls.runner import run, list_runs
    r = run("dpo", task="addition", model="tiny", steps=50, beta=0.1)

`**overrides` set fields of the method's `Config` (lr, batch_size, micro_batch_size, beta, ...).
RL / preference methods on the tiny preset start from the cached warm-start SFT base
(`reference_impls.tasks.base_model`). Writes out/<run_id>/run.json and out/<run_id>/checkpoint.safetensors.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from reference_impls.core.model import load_model
from reference_impls.core.record import git_commit, hardware, versions, write_run
from reference_impls.core.train import NonFiniteError, seed_everything, train
from reference_impls.methods import dpo, grpo, ppo, sft
from reference_impls.tasks.addition import TASKS, exact_match, mean_reward
from reference_impls.tasks.base_model import RECIPE, warm_start
from taxonomy.schema import Data, DataSource, Origin, Pipeline, Result, Run, Split, Stage

METHODS: dict[str, ModuleType] = {"sft": sft, "dpo": dpo, "grpo": grpo, "ppo": ppo}
DATA = {"sft": "demonstrations", "dpo": "preference pairs", "grpo": "exact-match reward",
        "ppo": "exact-match reward"}


def _scalars(cfg: dict) -> dict[str, float | int | str | bool]:
    return {k: v for k, v in cfg.items() if isinstance(v, float | int | str | bool)}


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in Path(s).name.lower()).strip("-") or "model"


def run(method: str, task: str = "addition", model: str = "tiny", steps: int | None = None,
        seed: int = 0, device: str = "cpu", out: Path = Path("runs"), progress: bool = True,
        **overrides) -> Run:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    mod = METHODS[method]
    fields = {f.name for f in dataclasses.fields(mod.Config)}
    if bad := sorted(set(overrides) - fields):
        raise ValueError(f"unknown {method} option(s) {bad}; known: {sorted(fields)}")
    cfg = mod.Config(**overrides, **({"steps": steps} if steps is not None else {}))
    task_obj = TASKS[task]()
    stages, start = [], model
    if mod.STARTS_FROM_BASE and model == "tiny":
        start = str(warm_start(task, model))
        stages.append(Stage(method="sft", data=[Data(source=DataSource.benchmark, name=f"{task} demonstrations")],
                            hyperparameters=_scalars(dataclasses.asdict(RECIPE)),
                            note="warm-start base (cached), reference_impls.tasks.base_model"))
    source = DataSource.rule_based if method in ("grpo", "ppo") else DataSource.benchmark
    stages.append(Stage(method=method, data=[Data(source=source, name=f"{task} {DATA[method]}")],
                        hyperparameters=_scalars(dataclasses.asdict(cfg))))

    created = datetime.now(UTC)
    run_id = f"{method}-{task}-{_slug(model)}-s{seed}-{created:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    rdir = Path(out) / run_id
    seed_everything(seed)
    policy, tok = load_model(start, device)
    algo = mod.Algo(policy, tok, task_obj, cfg, seed=seed)
    history: list[dict[str, float]] = []
    status, message = "finished", None
    try:
        train(algo, cfg, device, checkpoint=rdir / "checkpoint.safetensors", progress=progress,
              on_step=history.append)
    except NonFiniteError as e:
        status, message = "stopped", str(e)
    except Exception as e:  # record the failure, then let it propagate
        write_run(_record(run_id, created, task, model, stages, method, start, cfg, seed, device,
                          history, [], "failed", f"{type(e).__name__}: {e}"), rdir / "run.json")
        raise

    results: list[Result] = []
    if status == "finished":
        for split, name in ((Split.in_distribution, f"{task}-{task_obj.digits_id}digit"),
                            (Split.out_of_distribution, f"{task}-{task_obj.digits_ood}digit")):
            em = exact_match(policy, tok, task_obj.eval_sets[split.value])
            results.append(Result(benchmark=name, metric="exact_match", value=100 * em, split=split,
                                  model=run_id, origin=Origin.measured, note="greedy decoding"))
        if method in ("grpo", "ppo"):
            r = mean_reward(policy, tok, task_obj.eval_sets["in_distribution"], 4, cfg.temperature)
            results.append(Result(benchmark=f"{task}-{task_obj.digits_id}digit", metric="mean_reward",
                                  value=r, unit="", split=Split.in_distribution, model=run_id,
                                  origin=Origin.measured, note=f"4 samples/prompt, T={cfg.temperature}"))
        if hasattr(algo, "evaluate"):
            for metric, v in algo.evaluate().items():
                pct = metric.endswith("accuracy")
                results.append(Result(benchmark=f"{task}-{task_obj.digits_id}digit-pairs", metric=metric,
                                      value=100 * v if pct else v, unit="%" if pct else "",
                                      split=Split.in_distribution, model=run_id, origin=Origin.measured))
    record = _record(run_id, created, task, model, stages, method, start, cfg, seed, device,
                     history, results, status, message)
    write_run(record, rdir / "run.json")
    return record


def _record(run_id, created, task, model, stages, method, start, cfg, seed, device, history,
            results, status, message) -> Run:
    config = json.loads(json.dumps({"method": method, "start": start, **dataclasses.asdict(cfg)}))
    return Run(id=run_id, created=created.isoformat(), task=task, model=model,
               pipeline=Pipeline(stages=stages), config=config, seed=seed, device=str(device),
               hardware=hardware(device), versions=versions(), git_commit=git_commit(),
               history=history, results=results, status=status, message=message)


def list_runs(out: Path = Path("runs")) -> list[Run]:
    """Every run.json under `out`, oldest first."""
    runs = [Run.model_validate_json(p.read_text()) for p in Path(out).glob("*/run.json")]
    return sorted(runs, key=lambda r: r.created)
