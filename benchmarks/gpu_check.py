"""GPU check, prepared to run in one go on a CUDA machine (this repo's dev machines have no GPU).

    python benchmarks/gpu_check.py                  # CUDA: outputs under $OUT (else ./gpu_check_out)
    python benchmarks/gpu_check.py --cpu-dry-run    # the same code paths on CPU at toy sizes

1. trains every implemented method (`--methods all`, the default; or a comma list) for `--steps`
   steps per stage with `reference_impls.runner.run(...,
   device="cuda")` in bf16 (autocast, fp32 master weights: TrainConfig.bf16 = True), and checks that
   each run finished with a full, finite history on the GPU;
2. runs benchmarks/bench_trl.py at `--layers` x `--width` (default 8 x 512) on CUDA: our SFT / DPO /
   GRPO step time against TRL's on the same model and batch shape;
0. first of all, the GPU path's switches (issue 13 §3), a row each with time and peak memory: one
   forward + backward of the shared log-prob helper on a `--layers` x `--width` Llama with a
   Qwen-sized vocabulary (`--switch-vocab`, 151936) at `--switch-batch` x `--switch-len` tokens,
   plain / `logit_chunk` / `gradient_checkpointing` / both; then greedy sampling with the dynamic
   cache and with the static cache (the CUDA default), first call (compiles) and second call.
Writes gpu_check.json / gpu_check.md (updated after every phase, so a timeout still returns what
finished), bench_gpu.json / bench_gpu.md and runs/<run_id>/run.json under $OUT. Exits 2 at once
without CUDA (before importing transformers), 1 if any check failed.
Expected cost on one H100/H200: ~1 min of switches + ~1 min of training checks + ~2-3 min of
benchmark (not yet measured on a GPU since the switches were added).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
METHODS = ("all",)  # every method whose registry entry has `impl`


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="run every code path on CPU at toy sizes")
    p.add_argument("--steps", type=int, default=None, help="training steps per method (5; dry run 2)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--layers", type=int, default=8, help="benchmark model depth")
    p.add_argument("--width", type=int, default=512, help="benchmark model width")
    p.add_argument("--bench-batch", type=int, default=64, help="benchmark rows per step")
    p.add_argument("--bench-steps", type=int, default=10, help="benchmark measured steps per repeat")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--skip-switches", action="store_true", help="skip the GPU-path switch rows")
    p.add_argument("--switch-vocab", type=int, default=151936, help="switch rows: vocabulary (Qwen2's)")
    p.add_argument("--switch-batch", type=int, default=8, help="switch rows: sequences per step")
    p.add_argument("--switch-len", type=int, default=1024, help="switch rows: tokens per sequence")
    p.add_argument("--logit-chunk", type=int, default=1024, help="switch rows: TrainConfig.logit_chunk")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep runs/*/checkpoint.safetensors")
    p.add_argument("--out", type=Path, default=None, help="output folder (default $OUT or ./gpu_check_out)")
    return p.parse_args(argv)


def preflight(a: argparse.Namespace) -> str:
    """Fail fast and clearly without CUDA: only torch is imported before this check."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - the venv always has torch
        raise SystemExit(f"gpu_check: torch is not importable ({e})") from e
    if a.cpu_dry_run:
        return "cpu"
    if not torch.cuda.is_available():
        print(
            "gpu_check: CUDA is not available (torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda}). This script needs a GPU; "
            "use --cpu-dry-run to exercise its code paths on CPU.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if not torch.cuda.is_bf16_supported():
        print("gpu_check: this GPU does not support bf16", file=sys.stderr)
        raise SystemExit(2)
    return "cuda"


class Report:
    """gpu_check.json + gpu_check.md under `out`, rewritten after every phase."""

    def __init__(self, out: Path, device: str):
        import torch

        self.out, self.t0 = out, time.perf_counter()
        self.data: dict[str, Any] = {
            "device": device, "ok": True, "switches": [], "train": {}, "bench": None, "errors": [],
            "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "versions": {},
        }  # fmt: skip
        for pkg in ("transformers", "trl", "tokenizers", "accelerate", "datasets"):
            try:
                self.data["versions"][pkg] = __import__(pkg).__version__
            except Exception as e:  # noqa: BLE001 - recorded, not fatal here
                self.data["versions"][pkg] = f"unavailable ({type(e).__name__})"

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)

    def fail(self, what: str, err: str) -> None:
        self.data["ok"] = False
        self.data["errors"].append({"what": what, "error": err})
        self.log(f"FAILED {what}: {err.splitlines()[-1] if err else ''}")

    def write(self) -> None:
        d = self.data
        (self.out / "gpu_check.json").write_text(json.dumps(d, indent=1, default=str))
        lines = [f"# gpu_check: {'OK' if d['ok'] else 'FAILED'} on {d['device_name']} "
                 f"(torch {d['torch']}, CUDA {d['cuda']})", "",
                 ", ".join(f"{k} {v}" for k, v in d["versions"].items()), ""]
        if d["switches"]:
            lines += ["| GPU-path switch | what | s | peak GPU MiB | note |", "|---|---|---|---|---|"]
            lines += [f"| {r['switch']} | {r['what']} | {r['s']:.3f} | {r['peak_mib']:.0f} | {r.get('note', '')} |"
                      for r in d["switches"]] + [""]
        lines += ["| method | steps | status | s/step | final loss | peak GPU MiB | ID exact match % |",
                 "|---|---|---|---|---|---|---|"]  # fmt: skip
        for m, r in d["train"].items():
            lines.append(f"| {m} | {r.get('steps')} | {r.get('status')} | {r.get('s_per_step', float('nan')):.3f} | "
                         f"{r.get('final_loss', float('nan')):.4f} | {r.get('peak_mib', 0):.0f} | "
                         f"{r.get('id_exact_match', float('nan')):.1f} |")  # fmt: skip
        if d["bench"]:
            lines += ["", d["bench"]["table"]]
        for e in d["errors"]:
            lines += ["", f"**{e['what']}**", "```", e["error"][-3000:], "```"]
        (self.out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def overrides(method: str, dry: bool) -> dict[str, Any]:
    """Method Config overrides: defaults on the GPU, toy batches for the CPU dry run."""
    if not dry:
        return {"bf16": True}
    return {"sft": {"batch_size": 8}, "dpo": {"batch_size": 8}, "ppo": {"batch_size": 8, "updates_per_batch": 2},
            "grpo": {"batch_size": 8, "group_size": 4}}.get(method, {})  # fmt: skip


def task_for(method: str) -> str:
    """A task that gives what every stage of `method` needs: the multi-turn game for multi-turn
    methods (ArCHer), addition otherwise."""
    from reference_impls.runner import METHODS, parse_pipeline

    multi = any("multi_turn" in getattr(METHODS[m], "NEEDS", ()) for m in parse_pipeline(method))
    return "guess" if multi else "addition"


def check_training(a: argparse.Namespace, device: str, rep: Report) -> None:
    import torch

    from reference_impls.runner import run

    steps = a.steps or (2 if a.cpu_dry_run else 5)
    runs_dir = a.out / "runs"
    from reference_impls.runner import METHODS as IMPLEMENTED
    from reference_impls.runner import parse_pipeline

    names = [m.strip() for m in a.methods.split(",") if m.strip()]
    for method in sorted(IMPLEMENTED) if names == ["all"] else names:
        steps_total = steps * len(parse_pipeline(method))
        rep.log(f"train {method}: {steps} steps on {device}")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        try:
            rec = run(method, steps=steps, device=device, out=runs_dir, progress=False, task=task_for(method),
                      **overrides(method, a.cpu_dry_run))  # fmt: skip
        except Exception:  # noqa: BLE001 - report every failure, keep checking the others
            rep.fail(f"train {method}", traceback.format_exc())
            rep.write()
            continue
        wall = time.perf_counter() - t
        losses = [h.get("loss", float("nan")) for h in rec.history]
        em = [r.value for r in rec.results if r.metric == "accuracy" and getattr(r.split, "value", r.split) == "in_distribution"]
        rep.data["train"][method] = {
            "run_id": rec.id, "status": rec.status, "steps": len(rec.history), "wall_s": wall,
            "s_per_step": wall / max(len(rec.history), 1),  # includes the final evaluation
            "final_loss": losses[-1] if losses else float("nan"), "config_bf16": rec.config.get("bf16"),
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0,
            "id_exact_match": em[0] if em else float("nan"), "device": rec.device,
        }  # fmt: skip
        problems = []
        if rec.status != "finished":
            problems.append(f"status {rec.status}: {rec.message}")
        if len(rec.history) != steps_total:
            problems.append(f"history has {len(rec.history)} steps, expected {steps_total}")
        if not all(math.isfinite(x) for x in losses):
            problems.append(f"non-finite loss in {losses}")
        if device == "cuda" and not str(rec.device).startswith("cuda"):
            problems.append(f"run recorded device {rec.device!r}")
        if device == "cuda" and rep.data["train"][method]["peak_mib"] <= 0:
            problems.append("no GPU memory was allocated")
        if problems:
            rep.fail(f"train {method}", "; ".join(problems))
        else:
            rep.log(f"  ok: {len(rec.history)} steps, {wall:.1f}s, final loss {losses[-1]:.4f}")
        if not a.keep_checkpoints:
            for ck in (runs_dir / rec.id).glob("*.safetensors"):
                ck.unlink()
        rep.write()


def check_switches(a: argparse.Namespace, device: str, rep: Report) -> None:
    """A row per GPU-path switch: time and peak memory of one log-prob forward + backward
    (plain, logit_chunk, gradient_checkpointing, both), greedy sampling with the dynamic and the
    static cache, and a short GRPO run through the runner with both training switches on."""
    import torch

    cuda = device == "cuda"

    def measure(switch: str, what: str, fn, note: str = "", repeats: int = 1) -> Any:
        """Run fn `repeats` times (the first warms up / compiles); record the last run's time and
        the peak GPU memory over all of them."""
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        out, wall = None, 0.0
        try:
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                out = fn()
                if cuda:
                    torch.cuda.synchronize()
                wall = time.perf_counter() - t
        except Exception:  # noqa: BLE001 - a failed switch is reported, the others still run
            rep.fail(f"switch {switch}", traceback.format_exc())
            rep.write()
            return None
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
        rep.data["switches"].append({"switch": switch, "what": what, "s": wall, "peak_mib": peak, "note": note})
        rep.log(f"  switch {switch}: {wall:.3f}s, peak {peak:.0f} MiB {note}")
        rep.write()
        return out

    layers, width = (1, 32) if a.cpu_dry_run else (a.layers, a.width)
    _logprob_rows(a, device, layers, width, measure, rep)
    _sampler_rows(a, device, layers, width, measure, rep)

    # the training switches inside the loop: a short GRPO run
    from reference_impls.runner import run

    steps, chunk = 2, min(a.logit_chunk, 64)
    rec = measure("grpo run, logit_chunk + ckpt", f"{steps} GRPO steps (runner, tiny preset), logit_chunk="
                  f"{chunk}, gradient_checkpointing", lambda: run(
                      "grpo", steps=steps, device=device, out=a.out / "runs", progress=False, logit_chunk=chunk,
                      gradient_checkpointing=True, **overrides("grpo", a.cpu_dry_run)))  # fmt: skip
    if rec is not None and (rec.status != "finished" or len(rec.history) != steps
                            or not all(math.isfinite(h.get("loss", float("nan"))) for h in rec.history)):
        rep.fail("switch grpo run", f"status {rec.status}, {len(rec.history)} steps: {rec.message}")


def _llama(layers: int, width: int, vocab: int, device: str, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                      num_attention_heads=max(1, width // 64), tie_word_embeddings=False, **kw)  # fmt: skip
    return LlamaForCausalLM(cfg).to(device)


def _logprob_rows(a: argparse.Namespace, device: str, layers: int, width: int, measure, rep: Report) -> None:
    """One forward + backward of the shared log-prob helper (+ entropy) under each training switch."""
    import torch

    from reference_impls.core.logprobs import logit_chunking, sequence_logprobs
    from reference_impls.core.model import set_gradient_checkpointing
    from reference_impls.core.train import autocast

    dry = a.cpu_dry_run
    vocab, B, T, chunk = (1000, 2, 32, 16) if dry else (a.switch_vocab, a.switch_batch, a.switch_len, a.logit_chunk)
    torch.manual_seed(0)
    model = _llama(layers, width, vocab, device, pad_token_id=0).train()
    ids = torch.randint(1, vocab, (B, T), device=device)
    mask = torch.ones_like(ids)
    rep.log(f"switches: {layers} x {width} Llama, vocab {vocab}, {B} x {T} tokens, logit_chunk {chunk}")

    def step(c: int) -> float:
        model.zero_grad(set_to_none=True)
        with autocast(device), logit_chunking(c):
            logp, ent = sequence_logprobs(model, ids, mask, 0.9, return_entropy=True)
            loss = -(logp.mean() + 0.01 * ent.mean())
        loss.backward()
        return loss.item()

    what = f"fwd+bwd log-probs + entropy, {B}x{T} tok, V={vocab}"
    losses = {}
    for name, c, gc in (("plain", 0, False), (f"logit_chunk={chunk}", chunk, False),
                        ("gradient_checkpointing", 0, True), (f"both (chunk {chunk} + ckpt)", chunk, True)):
        set_gradient_checkpointing(model, gc)
        losses[name] = measure(name, what, lambda c=c: step(c), repeats=2)
    vals = [v for v in losses.values() if v is not None]
    if len(vals) == len(losses) and max(vals) - min(vals) > 1e-2 * max(1.0, abs(vals[0])):
        rep.fail("switches", f"the switches changed the loss: {losses}")


def _sampler_rows(a: argparse.Namespace, device: str, layers: int, width: int, measure, rep: Report) -> None:
    """Greedy sampling with the dynamic cache, then the static one (CUDA's default; chosen on CPU)."""
    import torch

    from reference_impls.core.model import char_tokenizer
    from reference_impls.core.sampling import cache_choice, sample

    tok = char_tokenizer()
    gen = _llama(layers, width, len(tok), device, pad_token_id=tok.pad_token_id,
                 eos_token_id=tok.eos_token_id, bos_token_id=None)
    prompts = [f"{i}+{i * 7}=" for i in range(4 if a.cpu_dry_run else 32)]
    n_new = 8 if a.cpu_dry_run else 128
    if cache_choice(None, torch.device(device)) == "static":
        static = ("static (the CUDA default)", None)
    else:  # the dry run exercises the static cache by choosing it
        static = ("static (chosen; CPU default: dynamic)", "static")
    outs = {}
    for label, cache in (("dynamic", "dynamic"), static):
        for attempt in ("first call", "second call"):
            outs[label] = measure(f"sampler {label}", f"greedy, {len(prompts)} prompts x {n_new} new tokens",
                                  lambda cache=cache: sample(gen, tok, prompts, n_new, greedy=True,
                                                             cache_implementation=cache), note=attempt)  # fmt: skip
    dyn, sta = outs.values()
    if dyn is not None and sta is not None:
        same = dyn.completions == sta.completions
        rep.data["switches"][-1]["note"] += f"; greedy output {'equals' if same else 'DIFFERS from'} dynamic"
        rep.write()


def check_bench(a: argparse.Namespace, device: str, rep: Report) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:  # needs trl (the [dev] extra); a missing or different TRL fails this phase only
        import bench_trl
    except Exception:  # noqa: BLE001
        rep.fail("bench_trl import", traceback.format_exc())
        return

    if a.cpu_dry_run:
        argv = ["--device", "cpu", "--layers", "1", "--width", "32", "--batch", "8", "--group-size", "4",
                "--steps", "2", "--warmup", "1", "--repeats", "1"]  # fmt: skip
    else:
        argv = ["--device", "cuda", "--layers", str(a.layers), "--width", str(a.width),
                "--batch", str(a.bench_batch), "--steps", str(a.bench_steps), "--warmup", "3",
                "--repeats", "3", "--threads", "0"]  # fmt: skip
    argv += ["--json", str(a.out / "bench_gpu.json")]
    rep.log(f"bench_trl {' '.join(argv)}")
    try:
        res = bench_trl.main(argv)
    except (Exception, SystemExit):  # noqa: BLE001
        rep.fail("bench_trl", traceback.format_exc())
        return
    table = bench_trl.table(res)
    (a.out / "bench_gpu.md").write_text(table + "\n")
    rep.data["bench"] = {"table": table, "rows": res["rows"]}


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    device = preflight(a)  # exits 2 here without CUDA
    a.out = (a.out or Path(os.environ.get("OUT") or "gpu_check_out")).resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = None
    if "SFTRL_CACHE" not in os.environ and not a.cpu_dry_run:  # keep the warm-start base off $OUT
        cache = tempfile.mkdtemp(prefix="sftrl-cache-")
        os.environ["SFTRL_CACHE"] = cache
    sys.path.insert(0, str(REPO))
    rep = Report(a.out, device)
    rep.log(f"gpu_check on {rep.data['device_name']}, outputs in {a.out}")
    rep.write()
    try:
        if not a.skip_switches:
            check_switches(a, device, rep)
        check_training(a, device, rep)
        if not a.skip_bench:
            check_bench(a, device, rep)
    finally:
        rep.write()
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    rep.log("ALL OK" if rep.data["ok"] else f"FAILED: {[e['what'] for e in rep.data['errors']]}")
    return 0 if rep.data["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
