"""Run a pipeline of methods on a task and record it as one Run:  run("sft,grpo", steps=20).

    from reference_impls.runner import run, list_runs
    r = run("dpo", task="addition", model="tiny", steps=50, beta=0.1)
    r = run("sft -> grpo", data="train.jsonl", reward="math", stage_options={"grpo": {"lr": 1e-4}})

The runner knows no method by name. It reads each method module's contract:
    NEEDS            signals the method eats (tasks/base.py); the task must provide them
    STARTS_FROM_BASE True: on the tiny preset, a cached warm-start SFT stage is put first
    PIPELINE         (optional) the stages a pipeline method stands for, e.g. ["sft", "dpo"]
    PRODUCES         (optional) "reward_model": the stage trains a reward model, not the policy;
                     later stages are rewarded by it and start from the previous policy
    Config           dataclass of options (defaults from the paper; `# comment` = help line)
    Algo(model, tok, task, cfg, seed)   collect(step) / loss(micro, totals) / evaluate() (optional)
Methods come from the registry: every `impl` of data/methods.yaml is importable here.

Layout of a run directory:
    spec.json                  everything needed to resume (`run(resume=DIR)`)
    run.json                   the Run record (status running|interrupted|stopped|failed|finished),
                               always written atomically
    stage-<k>/checkpoint.safetensors   training state (weights, optimizer, RNG) every `save_every`
                               (k = the stage's position in the Run; a warm-start stage is 1)
    stage-<i>/model/           the stage's final policy, HF-style (the next stage starts from it)
    stage-<i>/stage.json       the finished stage's history and results
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import re
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from reference_impls.core import distributed, tracking
from reference_impls.core.evaluate import accuracy, mean_reward, parse_ks, sampled_results
from reference_impls.core.lora import apply_lora, merge_lora, parse_lora
from reference_impls.core.model import TINY, load_model
from reference_impls.core.options import coerce
from reference_impls.core.record import git_commit, hardware, versions, write_atomic, write_run
from reference_impls.core.train import NonFiniteError, read_checkpoint, seed_everything, train
from reference_impls.tasks import MissingSignal, make_task, task_key
from reference_impls.tasks.base_model import (
    RECIPE,
    demonstrations_for_warm_start,
    sized,
    warm_start,
)
from taxonomy.registry import load_registry
from taxonomy.schema import Data, DataSource, Origin, Pipeline, Result, Run, Split, Stage

# Stages that are not methods of the taxonomy: `rm` trains a Bradley-Terry reward model (RLHF).
AUXILIARY = {"rm": "reference_impls.methods.rm"}


def _load_methods() -> dict[str, ModuleType]:
    mods = {m.id: importlib.import_module(m.impl) for m in load_registry().methods.values() if m.impl}
    return {**mods, **{k: importlib.import_module(v) for k, v in AUXILIARY.items()}}


METHODS: dict[str, ModuleType] = _load_methods()
MAX_SEED = 2**32 - 1


class UsageError(ValueError):
    """A mistake in what was asked (method, option, task, path, device): no training happened."""


def parse_pipeline(spec: str | list[str]) -> list[str]:
    """"sft,grpo" | "sft -> grpo" | ["sft", "grpo"] -> method ids, pipeline methods expanded."""
    names = [s.strip() for s in re.split(r",|->", spec)] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for name in names:
        if name not in METHODS:
            from taxonomy.loading import suggest

            raise UsageError(f"no reference implementation for {name!r}{suggest(name, METHODS)}; "
                             f"implemented: {', '.join(sorted(METHODS))}")
        out += parse_pipeline(METHODS[name].PIPELINE) if hasattr(METHODS[name], "PIPELINE") else [name]
    if not out:
        raise UsageError("empty pipeline")
    return out


def _configs(stages: list[str], steps: int | None, overrides: dict[str, Any],
             stage_options: dict[str, dict[str, Any]]) -> list[Any]:
    """One Config per stage. `overrides` go to every stage that has the field (an error if none
    has it); `stage_options[KEY]` to stages whose method id or 1-based position is KEY."""
    opts: list[dict[str, Any]] = [{} for _ in stages]
    for k, v in overrides.items():
        hit = [i for i, m in enumerate(stages) if k in _fields(m)]
        if not hit:
            raise UsageError(f"unknown {'/'.join(dict.fromkeys(stages))} option {k!r}; known: "
                             f"{', '.join(sorted(set().union(*(_fields(m) for m in stages))))}")
        for i in hit:
            opts[i][k] = v
    for key, kv in stage_options.items():
        idx = [i for i, m in enumerate(stages) if m == key or str(i + 1) == str(key)]
        if not idx:
            raise UsageError(f"--set {key}.…: no stage {key!r} in the pipeline {' -> '.join(stages)}")
        for i in idx:
            for k, v in kv.items():
                if k not in _fields(stages[i]):
                    raise UsageError(f"unknown {stages[i]} option {k!r}; known: {', '.join(sorted(_fields(stages[i])))}")
                opts[i][k] = v
    cfgs = []
    for m, o in zip(stages, opts, strict=True):
        cls = METHODS[m].Config
        if steps is not None:
            o = {"steps": steps, **o}
        try:
            cfgs.append(cls(**{k: coerce(cls, k, v) for k, v in o.items()}))
        except ValueError as e:
            raise UsageError(f"{m}: {e}") from None
        if cfgs[-1].steps < 1:
            raise UsageError(f"{m}: steps must be at least 1 (got {cfgs[-1].steps})")
    return cfgs


def check(pipeline, steps: int | None, overrides: dict[str, Any], stage_options: dict[str, dict],
          resume: Path | None = None) -> None:
    """What `run` checks before it trains, for a launcher to check once before starting N processes."""
    if resume is not None:
        _resumed(Path(resume), pipeline)
        return
    if pipeline is None:
        raise UsageError("name a method or a pipeline, e.g. 'sft' or 'sft,grpo'")
    _configs(parse_pipeline(pipeline), steps, overrides, stage_options)


def _fields(method: str) -> set[str]:
    return {f.name for f in dataclasses.fields(METHODS[method].Config)}


def _scalars(cfg: dict) -> dict[str, float | int | str | bool]:
    return {k: v for k, v in cfg.items() if isinstance(v, float | int | str | bool)}


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in Path(s).name.lower()).strip("-") or "model"


def _check_device(device: str) -> None:
    try:
        d = torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"--device {device!r}: {e}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device!r}: this torch ({torch.__version__}) sees no CUDA device; use --device cpu")
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device!r}: MPS is not available here")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out {out}: not writable ({e.strerror or e})") from None


def run(pipeline: str | list[str] | None = None, task: str = "addition", model: str = "tiny",
        steps: int | None = None, seed: int = 0, device: str = "cpu", out: Path = Path("runs"),
        progress: bool = True, *, task_options: dict | None = None, data: str | None = None,
        eval_data: str | None = None, reward: str | None = None,
        stage_options: dict[str, dict] | None = None, warm: bool | None = None,
        save_every: int | None = None, resume: Path | None = None, stop_after: int | None = None,
        warm_steps: int | None = None, warm_seed: int | None = None, eval_points: int = 0,
        replicates: str | None = None,
        notes: list[str] | None = None, lora: str | None = None, fsdp: bool = False,
        pass_k: str | None = None, report_to: str | list[str] | None = None, **overrides) -> Run:
    """Validate everything, then train each stage in turn and record one Run (see module doc).
    `warm_steps`: steps of the warm-start recipe (a weaker or stronger base; default RECIPE's);
    `warm_seed`: the seed the base is trained with (default: the run's seed).
    `eval_points`: also evaluate greedy ID/OOD accuracy that many times per stage (and once on
    the starting model), as `eval_<split>` entries of the history: learning curves (sftrl arena).
    `replicates`: the catalogued study this run replicates (sftrl replicate); `notes`: kept in the
    Run's config (e.g. which study stage was replaced by which method).
    `lora`: 'r=16,alpha=32,targets=q_proj,v_proj' trains LoRA adapters (core/lora.py).
    `report_to`: 'tensorboard,trackio,jsonl' also writes each step under the run folder (core/tracking.py).
    Under torchrun (more than one process) every rank calls `run` alike: ranks train data-parallel
    and rank 0 records (core/distributed.py); `fsdp` then shards the parameters with FSDP2.
    `stop_after` (tests): stop the last-started stage after that many steps, as if killed."""
    if resume is not None:
        rdir = Path(resume)
        spec, done = _resumed(rdir, pipeline)
        if done is not None:  # nothing to do, and nothing rewritten
            return done
        return _execute(spec, rdir, progress, stop_after)
    if pipeline is None:
        raise UsageError("name a method or a pipeline, e.g. 'sft' or 'sft,grpo'")
    if not (0 <= seed <= MAX_SEED):
        raise UsageError(f"--seed must be between 0 and {MAX_SEED} (got {seed})")
    stages = parse_pipeline(pipeline)
    _configs(stages, steps, overrides, stage_options or {})  # validate before anything else
    _check_device(device)
    if lora is not None:
        try:
            parse_lora(lora)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if importlib.util.find_spec("peft") is None:
            raise UsageError("--lora needs the peft package: pip install -e '.[lora]' (or 'peft==0.21.2')")
    if pass_k not in (None, "off"):  # sampled metrics (core/evaluate.sampled_results); "off": none
        try:
            parse_ks(pass_k)
        except ValueError as e:
            raise UsageError(str(e)) from None
    try:
        report_to = tracking.parse_report_to(report_to)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if fsdp and not distributed.launched():
        raise UsageError("--fsdp shards the model over processes: use it with --nproc N (or under torchrun)")
    distributed.init(device)
    out = Path(out)
    _check_out(out)
    created = datetime.now(UTC)
    tname = "data" if data else task
    run_id = f"{'-'.join(stages)}-{_slug(str(data or task))}-{_slug(model)}-s{seed}-{created:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    spec = dict(id=run_id, created=created.isoformat(), stages=stages, task=tname, model=model,
                steps=steps, seed=seed, device=device, task_options=task_options or {},
                data=str(Path(data).resolve()) if data else None,
                eval_data=str(Path(eval_data).resolve()) if eval_data else None, reward=reward,
                stage_options=stage_options or {}, overrides=overrides, warm=warm,
                save_every=save_every, warm_steps=warm_steps, warm_seed=warm_seed, eval_points=eval_points,
                replicates=replicates,
                notes=notes or [], lora=lora, fsdp=fsdp, pass_k=pass_k, report_to=report_to)
    spec = distributed.broadcast(spec)  # under torchrun: rank 0's id and time on every rank
    return _execute(spec, out / spec["id"], progress, stop_after, fresh=True)


def _check_lengths(task, model: str, max_new: int) -> None:
    """Refuse rows that cannot fit the model's context (prompt + completion budget, or prompt +
    reference solution) before anything trains: one line per row, at most ten."""
    from transformers import AutoConfig, AutoTokenizer

    if model == "tiny":
        limit, count = TINY["max_position_embeddings"], len  # one token per character
    else:
        try:
            limit = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)
            tok = AutoTokenizer.from_pretrained(model)
        except (OSError, ValueError):
            return  # load_model reports a model it cannot load
        if not limit:
            return

        def count(text: str) -> int:
            return len(tok(text, add_special_tokens=True)["input_ids"])
    bad = []
    for p in task.checked_problems():
        n_prompt = count(p.prompt)
        need = max(n_prompt + max_new, n_prompt + count(p.solution or "") + 1)
        if need > limit:
            where = p.meta.get("_where") if isinstance(p.meta, dict) else None
            bad.append(f"{where or repr(p.prompt[:40] + '…')}: prompt {n_prompt} tokens + completion "
                       f"{need - n_prompt} > the model's context of {limit} tokens")
            if len(bad) == 10:
                break
    if bad:
        raise UsageError("rows too long for the model (drop or shorten them, or lower --set max_new_tokens):\n  "
                         + "\n  ".join(bad))


SPEC_KEYS = ("id", "created", "stages", "task", "model", "steps", "seed", "device", "task_options", "data",
             "eval_data", "reward", "stage_options", "overrides", "warm", "save_every")


def _resumed(rdir: Path, pipeline) -> tuple[dict, Run | None]:
    """`_check_resume`, and a method named beside --resume must be the run's own pipeline."""
    spec, done = _check_resume(rdir)
    if pipeline is not None and parse_pipeline(pipeline) != spec["stages"]:
        raise UsageError(f"--resume {rdir} continues its own pipeline ({' -> '.join(spec['stages'])}); "
                         "leave out the method, or start a new run without --resume")
    return spec, done


def _check_resume(rdir: Path) -> tuple[dict, Run | None]:
    """Read and check every file a resume needs before anything is written: (spec, the Run if it
    already finished). A damaged file is a UsageError naming it and what to do."""
    if not (rdir / "spec.json").exists():
        raise UsageError(f"--resume {rdir}: no spec.json there (not a run directory)")
    try:
        spec = json.loads((rdir / "spec.json").read_text(encoding="utf-8"))
        missing = [k for k in SPEC_KEYS if k not in spec] if isinstance(spec, dict) else ["a JSON object"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--resume {rdir}: spec.json cannot be read ({e}); the run cannot be resumed") from None
    if missing:
        raise UsageError(f"--resume {rdir}: spec.json is damaged (missing {', '.join(missing)}); "
                         "the run cannot be resumed")
    if (rdir / "run.json").exists():
        try:
            old = Run.model_validate_json((rdir / "run.json").read_text(encoding="utf-8"))
            if old.status == "finished":
                return spec, old
        except (OSError, ValueError):
            pass  # a damaged record is rewritten when this resume ends
    for sdir in sorted(rdir.glob("stage-*")):
        if (f := sdir / "stage.json").exists():
            try:
                got = json.loads(f.read_text(encoding="utf-8"))
                [Result.model_validate(r) for r in got["results"]]
                assert isinstance(got["history"], list)
            except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
                raise UsageError(f"--resume: {f} is damaged ({type(e).__name__}); delete it to train "
                                 f"{sdir.name} again") from None
        elif (c := sdir / "checkpoint.safetensors").exists():
            try:
                read_checkpoint(c)
            except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
                raise UsageError(f"--resume: {c} is damaged ({type(e).__name__}); delete it to restart "
                                 f"{sdir.name} from its first step") from None
    _check_out(rdir)  # writable (a read-only copy cannot be resumed in place)
    return spec, None


@dataclasses.dataclass
class _Plan:
    """Everything a run needs before it trains: the stages' configs, the task, the warm start and
    the Run's record of the pipeline (built from the spec; nothing written yet)."""

    spec: dict
    stages: list[str]
    cfgs: list[Any]
    task: Any
    device: Any
    chars: str
    warm: bool
    tkey: str
    recipe: Any
    records: list[Stage]
    config: dict

    def record(self, history, results, status, message=None) -> Run:
        s = self.spec
        return Run(id=s["id"], created=s["created"], task=s["task"], model=s["model"],
                   pipeline=Pipeline(stages=self.records), config=self.config, seed=s["seed"],
                   device=str(self.device), hardware=hardware(self.device), versions=versions(),
                   git_commit=git_commit(), history=history, results=results, status=status, message=message,
                   replicates=s.get("replicates"))


def _plan(s: dict) -> _Plan:
    """Check the spec against the methods, the task and the model's context; build the plan."""
    stages: list[str] = s["stages"]
    cfgs = _configs(stages, s["steps"], s["overrides"], s["stage_options"])
    try:
        task_obj = make_task(None if s["data"] else s["task"], s["task_options"], data=s["data"],
                             eval_data=s["eval_data"], reward=s["reward"])
        for m in stages:
            task_obj.require(getattr(METHODS[m], "NEEDS", set()), m)
    except (ValueError, ImportError, OSError) as e:
        raise UsageError(str(e)) from None
    model = s["model"]
    device = distributed.init(s["device"])  # this rank's device (cuda:LOCAL_RANK under torchrun)
    for i, (m, cfg) in enumerate(zip(stages, cfgs, strict=True)):
        user_set = {*s["overrides"], *s["stage_options"].get(m, {}), *s["stage_options"].get(str(i + 1), {})}
        if hasattr(cfg, "max_new_tokens") and "max_new_tokens" not in user_set:
            cfg.max_new_tokens = task_obj.max_new_tokens  # the task's completion budget
        if s["save_every"] is not None:
            cfg.save_every = s["save_every"]
    warm = s["warm"] if s["warm"] is not None else (model == "tiny" and getattr(METHODS[stages[0]], "STARTS_FROM_BASE", False))
    plain = s["task"] == "addition" and not s["task_options"] and not s["reward"] and not s["data"]
    tkey = "addition" if plain else f"{s['task']}-{task_key(s['task'], s['task_options'], s['data'], s['reward'])}"
    recipe = dataclasses.replace(RECIPE, steps=s["warm_steps"]) if s.get("warm_steps") else RECIPE
    _check_lengths(task_obj, model, max([getattr(c, "max_new_tokens", 0) for c in cfgs] + [task_obj.max_new_tokens]))
    records: list[Stage] = []
    if warm:
        try:
            demo_task, what = demonstrations_for_warm_start(task_obj)
        except ValueError as e:
            raise UsageError(str(e)) from None
        recipe = sized(demo_task, recipe)
        records.append(Stage(method="sft", data=[Data(source=DataSource.benchmark, name=f"{s['task']} {what}")],
                             hyperparameters=_scalars(dataclasses.asdict(recipe)),
                             note="warm-start base (cached), reference_impls.tasks.base_model"))
    for m, cfg in zip(stages, cfgs, strict=True):
        needs = getattr(METHODS[m], "NEEDS", ())
        src = DataSource.rule_based if "verifiable_reward" in needs else DataSource.benchmark
        records.append(Stage(method=m, data=[Data(source=src, name=f"{s['task']} {', '.join(sorted(needs))}")],
                             hyperparameters=_scalars(dataclasses.asdict(cfg))))
    config = json.loads(json.dumps({"pipeline": stages, **{k: v for k, v in s.items() if k not in ("id", "created")},
                                    "stage_configs": [dataclasses.asdict(c) for c in cfgs],
                                    **(dataclasses.asdict(cfgs[-1]) if len(cfgs) == 1 else {})}, default=str))
    chars = task_obj.alphabet() if model == "tiny" else ""
    return _Plan(s, stages, cfgs, task_obj, device, chars, bool(warm), tkey, recipe, records, config)


def _execute(spec: dict, rdir: Path, progress: bool, stop_after: int | None,
             fresh: bool = False) -> Run:
    """Train every stage not finished yet and record the Run. The record only moves forward: a fresh
    run writes `running` once; a resume keeps its old record until it ends (runner._check_resume)."""
    s, plan = spec, _plan(spec)
    rdir.mkdir(parents=True, exist_ok=True)
    if fresh and distributed.is_main():
        (rdir / "spec.json").write_text(json.dumps(s, indent=2, default=str))
    history: list[dict] = []
    results: list[Result] = []
    if fresh:
        _write_run(plan.record(history, results, "running"), rdir / "run.json")
    tracker = tracking.Tracker(s.get("report_to") or [] if distributed.is_main() else [], rdir, s["id"], plan.config)
    try:
        if plan.warm and not distributed.is_main():
            distributed.barrier()  # rank 0 builds (or finds) the cached warm-start base first
        with distributed.local():
            wseed = s["seed"] if s.get("warm_seed") is None else s["warm_seed"]
            start = str(warm_start(plan.task, s["model"], wseed, plan.recipe, key=plan.tkey)) if plan.warm else s["model"]
        if plan.warm and distributed.is_main():
            distributed.barrier()
        base = start  # the Run's starting model: KL(base || policy) is measured against it
        for i, m in enumerate(plan.stages):
            k = i + 1 + int(plan.warm)  # the stage's position in the Run (the warm start is stage 1)
            sdir = rdir / f"stage-{k}"
            if (sdir / "stage.json").exists():  # finished before an interruption
                done = json.loads((sdir / "stage.json").read_text())
                history += done["history"]
                results += [Result.model_validate(r) for r in done["results"]]
                start = _reuse(plan, m, sdir, start)
                continue
            last = stop_after if i == len(plan.stages) - 1 or stop_after is None else None
            tracker.step = len(history)
            h, res, start = _stage(plan, i, k, sdir, start, base, not history, last, progress, tracker)
            history += h
            if res is None:  # stopped early (tests): as if killed after `stop_after` steps
                run_ = plan.record(history, results, "interrupted",
                                   f"stopped after {stop_after} steps of stage {k}; resume with --resume {rdir}")
                _write_run(run_, rdir / "run.json")
                return run_
            results += res
            _atomic_json(sdir / "stage.json", {"history": h, "results": [r.model_dump(mode="json") for r in res]})
            distributed.barrier()  # the next stage (every rank) loads what rank 0 saved
    except NonFiniteError as e:
        run_ = plan.record(history, results, "stopped", str(e))
        _write_run(run_, rdir / "run.json")
        return run_
    except KeyboardInterrupt:
        _write_run(plan.record(history, results, "interrupted", f"interrupted (Ctrl-C); resume with --resume {rdir}"),
                   rdir / "run.json")
        raise
    except UsageError:  # e.g. a model that cannot be loaded: nothing trained, nothing to keep
        if fresh and not history:
            shutil.rmtree(rdir, ignore_errors=True)
        raise
    except Exception as e:  # record the failure (with what finished before it), then let it propagate
        _write_run(plan.record(history, results, "failed", f"{type(e).__name__}: {e}"), rdir / "run.json")
        raise
    finally:
        tracker.close()
    run_ = plan.record(history, results, "finished")
    _write_run(run_, rdir / "run.json")
    return run_


def _reuse(plan: _Plan, m: str, sdir: Path, start: str) -> str:
    """A stage finished before an interruption: use what it produced; returns the next start."""
    if getattr(METHODS[m], "PRODUCES", "policy") == "reward_model":
        _use_reward_model(plan.task, sdir / "reward_model", plan.device)
        return start
    return str(sdir / "model")


def _stage(plan: _Plan, i: int, k: int, sdir: Path, start: str, base: str, first_stage: bool,
           last: int | None, progress: bool, tracker) -> tuple[list[dict], list[Result] | None, str]:
    """Train stage i (the Run's stage k) from `start`; evaluate and save it.
    -> (its history, its results or None if stopped after `last` steps, the next stage's start)."""
    s, m, cfg, task_obj, device = plan.spec, plan.stages[i], plan.cfgs[i], plan.task, plan.device
    produces = getattr(METHODS[m], "PRODUCES", "policy")
    seed_everything(s["seed"] + i)
    try:
        policy, tok = load_model(start, device, chars=plan.chars)
    except OSError as e:
        raise UsageError(f"--model {s['model']!r}: cannot load it ({str(e).splitlines()[0]})") from None
    if s.get("lora"):  # an rm stage copies the adapters onto its reward model's backbone
        try:
            policy = apply_lora(policy, parse_lora(s["lora"]))
        except ValueError as e:
            raise UsageError(str(e)) from None
    if hasattr(task_obj, "bind"):
        task_obj.bind(tok)  # chat templates of conversational data
    try:
        algo = METHODS[m].Algo(policy, tok, task_obj, cfg, seed=s["seed"] + i)
    except MissingSignal as e:  # e.g. a teacher the method cannot use with this model
        raise UsageError(str(e)) from None
    ckpt = sdir / "checkpoint.safetensors"
    points = int(s.get("eval_points") or 0)
    on_step, first = None, []
    if points and produces != "reward_model":
        every = max(1, cfg.steps // points)
        if first_stage and not ckpt.exists():  # the starting model: the curve's first point
            first = [{"step": -1.0, "rows": 0.0, **_eval_points(policy, tok, task_obj)}]

        def on_step(log, every=every, steps=cfg.steps):
            if (log["step"] + 1) % every == 0 or log["step"] == steps - 1:
                log.update(_eval_points(policy, tok, task_obj))
    tracker.step += len(first)
    h = train(algo, cfg, device, checkpoint=ckpt, resume=ckpt if ckpt.exists() else None,
              progress=progress and distributed.is_main(), stop_after=last,
              on_step=tracker.chain(on_step, k), fsdp=bool(s.get("fsdp")))
    if distributed.is_fsdp(policy):  # a plain copy of the trained weights (every rank)
        policy = _gathered(policy, start, device, plan.chars, s.get("lora"))
    h = [{"stage": float(k), **x} for x in first + h]
    if last is not None and len(h) - len(first) < cfg.steps:
        return h, None, start
    if produces == "reward_model":  # the policy is untouched; later stages use this reward
        res = evaluate_method(algo, task_obj, s["id"], k, m)
        rm_dir = algo.save_reward_model(sdir / "reward_model") if distributed.is_main() else None
        _use_reward_model(task_obj, distributed.broadcast(rm_dir), device)
        return h, res, start
    # DDP: rank 0 evaluates; FSDP: every rank (a method's metrics may run the sharded module)
    solo = distributed.active() and not s.get("fsdp") and not distributed.is_main()
    res = distributed.broadcast(None if solo else (evaluate(algo, policy, tok, task_obj, cfg, s["id"], k, m)
                                                   + _sampled(policy, tok, task_obj, s, k, m, base, device, plan.chars)))
    policy = merge_lora(policy)  # W + alpha/r B A: the next stage starts from a plain model
    if distributed.is_main():
        policy.save_pretrained(sdir / "model")
        tok.save_pretrained(sdir / "model")
    return h, res, str(sdir / "model")


@torch.no_grad()
def _eval_points(policy, tok, task) -> dict[str, float]:
    """Greedy accuracy on each split, for learning curves (the model is put back in train mode)."""
    was = policy.training
    policy.eval()
    out = {f"eval_{k}": accuracy(policy, tok, task, v) for k, v in task.eval_sets.items() if v}
    policy.train(was)
    return out


def _sampled(policy, tok, task, s: dict, stage: int, method: str, base: str, device, chars) -> list[Result]:
    """pass@k, entropy, length (each split) and KL(base || policy) (ID): core/evaluate.sampled_results."""
    if s.get("pass_k") == "off":
        return []
    base_model, _ = load_model(base, device, chars=chars)
    return sampled_results(policy, tok, task, s["id"], f"stage {stage} ({method})", parse_ks(s.get("pass_k")),
                           base=base_model)


def _write_run(run_: Run, path: Path) -> None:
    """Rank 0 records the Run (the other ranks of a torchrun launch train alongside)."""
    if distributed.is_main():
        write_run(run_, path)


def _gathered(policy, start: str, device: str, chars: str, lora: str | None):
    """The FSDP-sharded policy's weights in a plain model (a collective: every rank calls it)."""
    full = {k: distributed.full_tensor(v).detach() for k, v in policy.state_dict().items()}
    plain, _ = load_model(start, device, chars=chars)
    if lora:
        plain = apply_lora(plain, parse_lora(lora))
        keep = plain.state_dict().keys()  # the policy's adapter (a trainable copy's is dropped)
        full = {k: v for k, v in full.items() if k in keep}
    plain.load_state_dict(full)
    return plain


def _atomic_json(path: Path, obj) -> None:
    if not distributed.is_main():
        return
    write_atomic(path, json.dumps(obj, indent=1))


@torch.no_grad()
def evaluate(algo, policy, tok, task, cfg, run_id: str, stage: int, method: str) -> list[Result]:
    """Greedy accuracy (the task's reward) on the ID and OOD splits; sampled mean reward for
    methods that eat a reward; plus the method's own `evaluate()` metrics, if it has one."""
    out: list[Result] = []
    note = f"stage {stage} ({method})"
    for split in (Split.in_distribution, Split.out_of_distribution):
        probs = task.eval_sets.get(split.value) or []
        if probs:
            v = accuracy(policy, tok, task, probs)
            out.append(Result(benchmark=f"{task.name}-{split.value}", metric="accuracy", value=100 * v,
                              split=split, model=run_id, origin=Origin.measured,
                              note=f"{note}; greedy decoding, mean task score"))
    if "verifiable_reward" in getattr(METHODS[method], "NEEDS", ()) and task.eval_sets.get("in_distribution"):
        T = getattr(cfg, "temperature", 1.0)
        r = mean_reward(policy, tok, task, task.eval_sets["in_distribution"], 4, T)
        learned = " of the learned reward model" if getattr(task, "eval_reward", None) else ""
        out.append(Result(benchmark=f"{task.name}-in_distribution", metric="mean_reward", value=r,
                          unit="", split=Split.in_distribution, model=run_id, origin=Origin.measured,
                          note=f"{note}; 4 samples/prompt, T={T}{learned}"))
    return out + evaluate_method(algo, task, run_id, stage, method)


def evaluate_method(algo, task, run_id: str, stage: int, method: str) -> list[Result]:
    """The method's own metrics (`Algo.evaluate()`), if it defines any."""
    out = []
    for metric, v in (algo.evaluate().items() if hasattr(algo, "evaluate") else []):
        pct = metric.endswith("accuracy")
        out.append(Result(benchmark=f"{task.name}-in_distribution", metric=metric,
                          value=100 * v if pct else v, unit="%" if pct else "",
                          split=Split.in_distribution, model=run_id, origin=Origin.measured,
                          note=f"stage {stage} ({method})"))
    return out


def _use_reward_model(task, path: Path, device: str) -> None:
    """Later stages are rewarded by the learned reward model at `path` (RLHF)."""
    from reference_impls.core.reward_model import reward_fn

    if getattr(task, "eval_reward", None) is None:
        task.eval_reward = task.reward  # accuracy keeps measuring the task's own scorer
    task.reward = reward_fn(str(path), device)


def list_runs(out: Path = Path("runs")) -> list[Run]:
    """Every run.json under `out`, oldest first."""
    runs = [Run.model_validate_json(p.read_text()) for p in Path(out).glob("*/run.json")]
    return sorted(runs, key=lambda r: r.created)
