"""The training loop shared by every method: gradient accumulation, clipping, LR schedule, seeding,
bf16 autocast on CUDA, safetensors checkpoints with exact resume, and a non-finite stop.

A method supplies an `Algo`:
    module: nn.Module                                   what is trained (policy, + critic for PPO)
    collect(step) -> (batch: dict[str, Tensor], stats)  the step's full batch, rows first; built
                                                        under no_grad (RL methods sample here)
    loss(micro, totals) -> (loss, stats)                 the micro-batch's share of the full-batch
                                                        loss: normalised by `totals` (counts of the
                                                        whole batch), so sum over micro-batches ==
                                                        full-batch loss; stats are additive alike
    extra_state() -> dict, load_extra_state(dict)       optional: JSON-able state an Algo keeps
                                                        across steps (a running baseline, a
                                                        bandit, a buffer), saved in checkpoints
Data must be a function of (seed, step) and sampling must use the global torch RNG: the checkpoint
stores the RNG states, so an interrupted-and-resumed run equals an uninterrupted one.

Under torchrun (more than one process; core/distributed.py) each rank collects its share of the
step's batch, `totals` are summed over ranks before the loss (so losses are normalised by the
*global* row / token counts), gradients are summed over ranks, and rank 0 writes checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from reference_impls.core import diagnostics
from reference_impls.core import distributed as dist
from reference_impls.core.logprobs import logit_chunking
from reference_impls.core.model import set_gradient_checkpointing

Batch = dict[str, Tensor]


@dataclass
class TrainConfig:
    steps: int = 100  # optimizer steps (collected batches) of this stage
    batch_size: int = 32  # rows per optimizer step (sequences, pairs or completions)
    micro_batch_size: int | None = None  # rows per forward/backward; None = the whole batch
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW (beta1, beta2)
    schedule: Literal["constant", "cosine"] = "constant"  # LR after warmup
    warmup_steps: int = 0  # linear LR warmup steps
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr
    max_grad_norm: float | None = 1.0  # clip the global gradient norm (None: no clipping)
    updates_per_batch: int = 1  # optimizer steps on each collected batch (PPO epochs / mu)
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)
    save_every: int = 0  # checkpoint every n steps (0: only at the end)
    fused: bool = True  # fused AdamW where torch has it (see make_optimizer); False: per-parameter
    logit_chunk: int = 0  # score log-probs this many tokens at a time (chunked output head + log-softmax, recomputed in backward): whole-batch logits never exist; 0 = off
    gradient_checkpointing: bool = False  # recompute each transformer block's activations in backward (less memory, ~1 more forward of compute)

    def __post_init__(self):
        for f in dataclasses.fields(self):  # every method's options: no NaN or infinite numbers
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v) and f.name != "max_grad_norm":
                raise ValueError(f"{f.name} must be a finite number, got {v}")
        for name, (ok, rule) in RANGES.items():
            v = getattr(self, name, None)
            if v is not None and not isinstance(v, bool) and isinstance(v, int | float) and not ok(v):
                raise ValueError(f"{name} must be {rule}, got {v}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be at least 1 (or empty), got {self.micro_batch_size}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {self.betas}")


# Ranges of options that many methods share, by name (a method's Config may declare its own checks).
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "steps": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "lr": (lambda v: v > 0, "positive"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "max_grad_norm": (lambda v: v > 0, "positive (or empty: no clipping)"),
    "updates_per_batch": (lambda v: v >= 1, "at least 1"),
    "save_every": (lambda v: v >= 0, ">= 0 (0: only at the end)"),
    "logit_chunk": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "temperature": (lambda v: v > 0, "positive"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "max_new_tokens": (lambda v: v >= 1, "at least 1"),
    "group_size": (lambda v: v >= 1, "at least 1"),
    "samples_per_prompt": (lambda v: v >= 1, "at least 1"),
    "beta": (lambda v: v >= 0, ">= 0"),
    "eps_low": (lambda v: v >= 0, ">= 0"),
    "eps_high": (lambda v: v >= 0, ">= 0"),
}


class Algo(Protocol):
    module: nn.Module

    def collect(self, step: int) -> tuple[Batch, dict[str, float]]: ...

    def loss(self, micro: Batch, totals: dict[str, Any]) -> tuple[Tensor, dict[str, float]]: ...


class NonFiniteError(RuntimeError):
    def __init__(self, step: int, quantity: str, value: float):
        super().__init__(f"non-finite {quantity} ({value}) at step {step}: run stopped")
        self.step, self.quantity, self.value = step, quantity, value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def step_rng(seed: int, step: int) -> random.Random:
    """The data RNG of one step: a function of (seed, step) only, hence resumable for free."""
    return random.Random(seed * 1_000_003 + step)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup over `warmup_steps`, then constant or cosine decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def autocast(device: torch.device | str, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU runs stay fp32 and bit-reproducible)."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(module: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel over all parameters, as TRL's default `adamw_torch_fused`) if
    `cfg.fused` and torch has a fused kernel for the parameters' device and dtype (CPU and CUDA in
    torch 2.13: ~4x faster than the per-parameter loop on CPU); else torch's default (foreach or
    per-parameter). The two agree to float round-off (~1e-7 per step), and a resumed run rebuilds
    the same one, so resume stays exact."""
    if getattr(module, "is_adapter_disabled_view", False):  # core/lora.py
        raise ValueError("with --lora, copy.deepcopy(policy) is its frozen adapter-disabled base; a method "
                         "that trains a copy must make it with core.lora.trainable_copy (as token-cleaning does)")
    params = [p for p in module.parameters() if p.requires_grad]
    kw = dict(lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.fused:
        try:
            return torch.optim.AdamW(params, **kw, fused=True)
        except (RuntimeError, ValueError):  # no fused kernel for this device / dtype
            pass
    return torch.optim.AdamW(params, **kw)


def split(batch: Batch, size: int | None) -> list[Batch]:
    """Micro-batches of `size` rows (in order)."""
    n = len(next(iter(batch.values())))
    size = size or n
    return [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, n, size)]


# ------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: Path, module: nn.Module, opt: torch.optim.Optimizer, step: int,
                    history: list[dict[str, float]], extra: dict | None = None) -> None:
    """One safetensors file: model weights, optimizer state, RNG states; step/history in metadata.
    Distributed: rank 0 writes; FSDP shards are gathered first (every rank calls this), so the
    file holds the full state and resumes at any world size."""
    fsdp = dist.is_fsdp(module)
    if not dist.is_main() and not fsdp:
        return
    tensors: dict[str, Tensor] = {}
    for k, v in module.state_dict().items():
        tensors[f"model.{k}"] = dist.full_tensor(v).detach().cpu().clone().contiguous()
    osd = opt.state_dict()
    for idx, state in osd["state"].items():
        for name, v in state.items():
            t = dist.full_tensor(v) if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"opt.{idx}.{name}"] = t.detach().cpu().clone().contiguous()
    if not dist.is_main():
        return
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    meta = {"step": str(step), "param_groups": json.dumps(osd["param_groups"]),
            "python_rng": json.dumps(random.getstate()), "history": json.dumps(history),
            "extra": json.dumps(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: Path, module: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list, dict]:
    """Restore weights, optimizer and RNG states; returns (last finished step, history, extra)."""
    tensors, meta = read_checkpoint(path)
    module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    return restore_optimizer(tensors, meta, opt)


def read_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a checkpoint file."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return load_file(str(path)), meta


def restore_optimizer(tensors: dict[str, Tensor], meta: dict[str, str],
                      opt: torch.optim.Optimizer) -> tuple[int, list, dict]:
    """Optimizer and RNG states of a read checkpoint (laid out as the parameters: FSDP shards)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    state: dict[int, dict[str, Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = dist.like_param(v, params[int(idx)])
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors["rng.cuda"]))
    py = json.loads(meta["python_rng"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    return int(meta["step"]), json.loads(meta["history"]), json.loads(meta.get("extra", "{}"))


# ------------------------------------------------------------------------------------ the loop


def train(algo: Algo, cfg: TrainConfig, device: torch.device | str = "cpu", *,
          checkpoint: Path | None = None, resume: Path | None = None, stop_after: int | None = None,
          progress: bool = True, on_step: Callable[[dict[str, float]], None] | None = None,
          fsdp: bool = False) -> list[dict[str, float]]:
    """Run `cfg.steps` steps (or stop after `stop_after` steps, as if interrupted); returns the
    metric history. Raises NonFiniteError on a non-finite loss, statistic or gradient norm.
    `fsdp` (under torchrun): shard the parameters with FSDP2 (core/distributed.py)."""
    module = algo.module
    ckpt = read_checkpoint(resume) if resume is not None else None
    if ckpt is not None:  # weights before sharding: the file holds the full tensors
        module.load_state_dict({k[6:]: v for k, v in ckpt[0].items() if k.startswith("model.")})
    set_gradient_checkpointing(module, cfg.gradient_checkpointing)
    if fsdp and dist.active():
        dist.fully_shard_model(module)
    dist.broadcast_params(module)  # every rank starts from rank 0's weights
    if dist.active() and hasattr(algo, "task") and not isinstance(algo.task, dist.ShardedTask):
        algo.task = dist.ShardedTask(algo.task)  # each rank collects its share of every step
    opt = make_optimizer(module, cfg)
    start, history = 0, []
    if ckpt is not None:
        last, history, extra = restore_optimizer(*ckpt, opt)
        if hasattr(algo, "load_extra_state"):
            algo.load_extra_state(extra)
        start = last + 1
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, dynamic_ncols=True, leave=False, disable=None)  # off when not a TTY
    module.train()
    for step in range(start, end):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        if dist.active():  # independent samples per rank, resumable: a function of (seed, step, rank)
            torch.manual_seed(dist.step_seed(getattr(algo, "seed", 0), step))
        with autocast(device, cfg.bf16), dist.collecting(), logit_chunking(cfg.logit_chunk):
            try:
                batch, log = algo.collect(step)
            except RuntimeError as e:  # torch.multinomial on inf/nan probabilities (nothing else)
                if "probability tensor contains" in str(e):
                    raise NonFiniteError(step, "sampling probabilities (weights diverged)", float("nan")) from e
                raise
        log = {**diagnostics.rollout_stats(batch, algo), **log}  # completion lengths, truncation, zero-std groups
        totals = {"rows": len(next(iter(batch.values())))}
        if "mask" in batch:
            totals["tokens"] = batch["mask"].sum()
        if dist.active():  # global counts: each rank's loss is its share of the global batch loss
            totals = {"rows": int(dist.all_sum(totals["rows"]).item()),
                      **({"tokens": dist.all_sum(totals["tokens"])} if "tokens" in totals else {})}
            log = dist.all_sum_dict(log, mean=True)  # collect's statistics: rank means
        for _ in range(cfg.updates_per_batch):
            opt.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            bad = None  # a non-finite loss on this rank (distributed: every rank stops together)
            for micro in split(batch, cfg.micro_batch_size):
                with autocast(device, cfg.bf16), logit_chunking(cfg.logit_chunk):
                    loss, stats = algo.loss(micro, totals)
                stats = {**diagnostics.micro_stats(micro, totals), **stats}  # entropy (core/diagnostics.py)
                if not torch.isfinite(loss):
                    if not dist.active():
                        raise NonFiniteError(step, "loss", loss.item())
                    bad = loss.item() if bad is None else bad
                loss.backward()
                for k, v in {"loss": loss.item(), **stats}.items():
                    sums[k] = sums.get(k, 0.0) + v
            if dist.active():
                if dist.all_sum(float(bad is not None)).item() > 0:
                    raise NonFiniteError(step, "loss", float("nan") if bad is None else bad)
                sums = dist.all_sum_dict(sums)  # additive statistics: the global batch's
                if not dist.is_fsdp(module):  # (FSDP reduce-scatters the sums itself)
                    dist.sum_grads([p for p in module.parameters() if p.requires_grad])
            params = [p for p in module.parameters() if p.grad is not None]
            norm = dist.full_tensor(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf")))
            if not torch.isfinite(norm):
                raise NonFiniteError(step, "grad_norm", norm.item())
            opt.step()
        tokens = batch["attention_mask"].sum() if "attention_mask" in batch else totals.get("tokens", 0)
        tokens = dist.all_sum(tokens) if dist.active() and "attention_mask" in batch else tokens
        log = {"step": float(step), "lr": opt.param_groups[0]["lr"], **log, **sums,
               "grad_norm": norm.item(), "tokens": float(tokens), "rows": float(totals["rows"]),
               "wall_s": time.perf_counter() - t0}
        for k, v in log.items():
            if not math.isfinite(v):
                raise NonFiniteError(step, k, v)
        history.append(log)
        if on_step:
            on_step(log)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{log[k]:.3f}" for k in ("loss", "reward") if k in log})
        if checkpoint is not None and (
            step == end - 1 or (cfg.save_every and (step + 1) % cfg.save_every == 0)):
            extra = algo.extra_state() if hasattr(algo, "extra_state") else None
            save_checkpoint(checkpoint, module, opt, step, history, extra)
    if bar is not None:
        bar.close()
    return history
