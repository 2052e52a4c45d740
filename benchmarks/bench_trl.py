"""Step time of our reference SFT, DPO and GRPO against TRL's trainers, same model and batch shape.

    .venv/bin/python benchmarks/bench_trl.py                                  # CPU, tiny preset
    .venv/bin/python benchmarks/bench_trl.py --device cuda --layers 8 --width 512

Both sides train the same randomly initialised Llama (built from a LlamaConfig with our
char-level tokenizer; 2 x 64 is exactly the "tiny" preset) on the addition task:
  sft   `batch` demonstrations per step                (ours: methods.sft; TRL: SFTTrainer)
  dpo   `batch` pairs, beta 0.1, sigmoid, frozen ref    (ours: methods.dpo; TRL: DPOTrainer)
  grpo  `batch` completions = batch/G prompts x G, `max_new_tokens` new tokens, beta 0.04 (k3,
        ref forward every step), seq-mean-token-mean = TRL loss_type "grpo", one update per batch
        (ours: methods.grpo; TRL: GRPOTrainer, num_iterations 1)
  cispo, sapo  as grpo with no KL (beta 0, no reference forward): ours methods.cispo (IS-weight
        cap 5.0) / methods.sapo; TRL GRPOTrainer loss_type "cispo" (epsilon_high 5.0) / "sapo"
A step's time is the wall time between two consecutive optimizer-step ends (so it includes the
batch building, sampling for GRPO, forward, backward and the AdamW step, on both sides). Each
repeat trains a fresh model for warmup + steps steps, ours and TRL alternating; the table gives
the median over all measured steps of all repeats, in one process. CPU: fp32. CUDA: bf16 autocast
with fp32 master weights on both sides (TRL bf16=True). Gradient checkpointing off on both.
No timing is asserted anywhere: this prints numbers, it does not judge them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the repo

import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset, disable_progress_bars  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from reference_impls.core.model import TINY, char_tokenizer, load_model  # noqa: E402
from reference_impls.core.train import seed_everything, train  # noqa: E402
from reference_impls.methods import cispo, dpo, grpo, sapo, sft  # noqa: E402
from reference_impls.tasks.addition import Addition  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
disable_progress_bars()
warnings.filterwarnings("ignore")

METHODS = ("sft", "dpo", "grpo", "cispo", "sapo")


def build_model(path: Path, layers: int, width: int, seed: int = 0) -> int:
    """A randomly initialised Llama (the tiny preset's shape at 2 x 64) saved HF-style; -> #params."""
    tok = char_tokenizer()
    heads = max(4, width // 64)  # head dim 16 at width 64 (as TINY), 64 from width 256 up
    cfg = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None, tie_word_embeddings=False,
                      **{**TINY, "hidden_size": width, "intermediate_size": 4 * width,
                         "num_hidden_layers": layers, "num_attention_heads": heads,
                         "num_key_value_heads": heads})  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_times(ends: list[float], warmup: int) -> list[float]:
    """Seconds per step from the step-end timestamps, dropping the first `warmup` steps."""
    diffs = [b - a for a, b in zip(ends, ends[1:], strict=False)]  # diffs[i] = step i+1
    return diffs[max(warmup - 1, 0) :]


# ------------------------------------------------------------------------------------------ ours
def ours_config(method: str, a: argparse.Namespace) -> Any:
    steps = a.warmup + a.steps
    common = dict(steps=steps, batch_size=a.batch, bf16=a.device.startswith("cuda"), max_grad_norm=1.0)
    if method == "sft":
        return sft.Config(**common)
    if method == "dpo":
        return dpo.Config(**common, beta=0.1, loss_type="sigmoid")
    if method in ("cispo", "sapo"):  # no KL term: no reference model
        mod = {"cispo": cispo, "sapo": sapo}[method]
        return mod.Config(**common, group_size=a.group_size, max_new_tokens=a.max_new_tokens, temperature=1.0)
    return grpo.Config(**common, group_size=a.group_size, max_new_tokens=a.max_new_tokens, beta=0.04,
                       aggregation="seq-mean-token-mean", eps_low=0.2, eps_high=0.2, temperature=1.0)


def time_ours(method: str, model_dir: Path, a: argparse.Namespace) -> list[float]:
    seed_everything(a.seed)
    model, tok = load_model(str(model_dir), a.device)
    mod = {"sft": sft, "dpo": dpo, "grpo": grpo, "cispo": cispo, "sapo": sapo}[method]
    cfg = ours_config(method, a)
    algo = mod.Algo(model, tok, Addition(), cfg, seed=a.seed)
    ends: list[float] = []

    def on_step(_: dict[str, float]) -> None:
        sync(a.device)
        ends.append(time.perf_counter())

    train(algo, cfg, a.device, progress=False, on_step=on_step)
    return step_times(ends, a.warmup)


# ------------------------------------------------------------------------------------------- TRL
class StepTimer(TrainerCallback):
    def __init__(self, device: str):
        self.device, self.ends = device, []

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        sync(self.device)
        self.ends.append(time.perf_counter())


def trl_dataset(method: str, a: argparse.Namespace) -> Dataset:
    task, rng = Addition(), random.Random(a.seed)
    n = a.batch * (a.warmup + a.steps)
    if method == "sft":
        demos = task.demonstrations(n, rng)
        return Dataset.from_dict({"prompt": [p for p, _ in demos], "completion": [c for _, c in demos]})
    if method == "dpo":
        pairs = task.preference_pairs(n, rng)
        return Dataset.from_dict({k: [p[i] for p in pairs] for i, k in enumerate(("prompt", "chosen", "rejected"))})
    problems = task.prompts(n // a.group_size, rng)
    return Dataset.from_dict({"prompt": [p.prompt for p in problems], "answer": [p.answer for p in problems]})


def exact_match_reward(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    return [float(c.strip() == s) for c, s in zip(completions, answer, strict=True)]


def time_trl(method: str, model_dir: Path, a: argparse.Namespace, out: Path) -> list[float]:
    from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    seed_everything(a.seed)
    cuda = a.device.startswith("cuda")
    common = dict(
        output_dir=str(out), bf16=cuda, use_cpu=not cuda, gradient_checkpointing=False, report_to="none",
        save_strategy="no", max_steps=a.warmup + a.steps, per_device_train_batch_size=a.batch,
        disable_tqdm=True, logging_steps=10**6, seed=a.seed, max_grad_norm=1.0, dataloader_num_workers=0,
    )  # fmt: skip
    model, tok = load_model(str(model_dir), a.device)
    ds = trl_dataset(method, a)
    if method == "sft":
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=ds, processing_class=tok)
    elif method == "dpo":
        ref, _ = load_model(str(model_dir), a.device)
        trainer = DPOTrainer(model=model, ref_model=ref, args=DPOConfig(**common, beta=0.1, loss_type=["sigmoid"]),
                             train_dataset=ds, processing_class=tok)  # fmt: skip
    else:
        loss = dict(beta=0.04, loss_type="grpo") if method == "grpo" else dict(beta=0.0, loss_type=method)
        if method == "cispo":
            loss["epsilon_high"] = 5.0  # TRL's cispo cap (a ratio) = ours 1 + eps_high
        args = GRPOConfig(**common, num_generations=a.group_size, max_completion_length=a.max_new_tokens,
                          temperature=1.0, top_k=0, top_p=1.0, use_bias_correction_kl=False, epsilon=0.2,
                          **loss)  # fmt: skip
        trainer = GRPOTrainer(model=model, reward_funcs=exact_match_reward, args=args, train_dataset=ds,
                              processing_class=tok)  # fmt: skip
    timer = StepTimer(a.device)
    trainer.add_callback(timer)
    with contextlib.redirect_stdout(io.StringIO()):  # Trainer prints its end-of-train metrics dict
        trainer.train()
    return step_times(timer.ends, a.warmup)


# ------------------------------------------------------------------------------------------ main
def iqr(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], q[2]


def run(a: argparse.Namespace) -> dict[str, Any]:
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False")
    torch.set_num_threads(a.threads or torch.get_num_threads())
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    if bad := sorted(set(methods) - set(METHODS)):
        raise SystemExit(f"unknown method(s) {bad}; choose from {METHODS}")
    if a.batch % a.group_size:
        raise SystemExit("--batch must be a multiple of --group-size (GRPO completions per step)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        n_params = build_model(model_dir, a.layers, a.width, a.seed)
        for method in methods:
            times: dict[str, list[float]] = {"ours": [], "trl": []}
            for r in range(a.repeats):
                order = ("ours", "trl") if r % 2 == 0 else ("trl", "ours")  # alternate: no order bias
                for side in order:
                    if side == "ours":
                        times["ours"] += time_ours(method, model_dir, a)
                    else:
                        times["trl"] += time_trl(method, model_dir, a, Path(tmp) / f"trl-{method}-{r}")
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"method": method, "steps_measured": {k: len(v) for k, v in times.items()},
                         "ours_ms": 1e3 * med["ours"], "trl_ms": 1e3 * med["trl"],
                         "ours_iqr_ms": [1e3 * x for x in iqr(times["ours"])],
                         "trl_iqr_ms": [1e3 * x for x in iqr(times["trl"])],
                         "ratio": med["ours"] / med["trl"]})  # fmt: skip
    device_name = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or "cpu"
    return {"args": vars(a), "n_params": n_params, "device_name": device_name, "threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
            "rows": rows}  # fmt: skip


def table(res: dict[str, Any]) -> str:
    a = res["args"]
    shape = {"sft": f"{a['batch']} seqs", "dpo": f"{a['batch']} pairs",
             **{m: f"{a['batch'] // a['group_size']}x{a['group_size']} compl., {a['max_new_tokens']} new tok"
                for m in ("grpo", "cispo", "sapo")}}  # fmt: skip
    v = res["versions"]
    lines = [
        f"device {a['device']} ({res['device_name']}, {res['threads']} threads), model {a['layers']} layers x "
        f"{a['width']} wide ({res['n_params'] / 1e6:.2f} M params), torch {v['torch']}, transformers "
        f"{v['transformers']}, trl {v['trl']}; median of {a['repeats']} x {a['steps']} steps after "
        f"{a['warmup']} warm-up steps",
        "",
        "| method | batch | ours ms/step (IQR) | TRL ms/step (IQR) | ours / TRL |",
        "|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        o, t = r["ours_iqr_ms"], r["trl_iqr_ms"]
        lines.append(f"| {r['method']} | {shape[r['method']]} | {r['ours_ms']:.1f} ({o[0]:.1f}-{o[1]:.1f}) | "
                     f"{r['trl_ms']:.1f} ({t[0]:.1f}-{t[1]:.1f}) | {r['ratio']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=16, help="sequences / pairs / completions per step")
    p.add_argument("--group-size", type=int, default=8, help="GRPO completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=6, help="GRPO completion length")
    p.add_argument("--steps", type=int, default=20, help="measured steps per repeat")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured steps per repeat (>= 1)")
    p.add_argument("--repeats", type=int, default=3, help="fresh runs per side, ours and TRL alternating")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: a tiny model gains nothing from intra-op threads, "
                        "and on a shared machine OpenMP spin-waiting makes 2 threads ~50x slower; "
                        "0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)
    a.warmup = max(a.warmup, 1)
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    res = run(a)
    print(table(res))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1, default=str))
    return res


if __name__ == "__main__":
    main()

