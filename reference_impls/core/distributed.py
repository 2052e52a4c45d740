"""Data-parallel training over processes started by `torchrun` (one process per device): PyTorch's
own engine, no Ray, no launcher of ours beyond `sftrl run --nproc N` (which calls torchrun).

    torchrun --nproc-per-node 2 -m sftrl_cli run grpo --steps 50      # gloo on CPU, nccl on CUDA
    sftrl run grpo --steps 50 --nproc 2                               # the same, launched for you

The design (core/train.py and runner.py use this file; method files know nothing of it):

- **Sharding by task calls.** While a step's batch is collected, every rank asks the task for the
  step's whole list of items (prompts, demonstrations, pairs) with the same step RNG, and keeps
  its contiguous share (`ShardedTask`). A group method asks for *prompts* and samples the G
  completions of each prompt itself, so every group lives whole on one rank: group statistics
  (GRPO's mean/std, RLOO's leave-one-out baseline) are exact with no communication. Statistics
  a method takes over its *whole batch* are taken over every rank's rows (`moments`, `all_sum`):
  REINFORCE++, PPO and RLOO advantage whitening, KTO's z0 (its mismatched rows rotate across
  ranks), the hybrids' row normalisers (core/hybrid.row_weights, NFT, UFT's hint count), and
  ReLIFT's buffer of failed prompts (gathered, one buffer on every rank). DAPO's dynamic
  sampling fills each rank's share of the step's groups. Methods that fill a quota of
  `batch_size` rows by drawing again (GRESO, SEC) or by filtering samples or a selected pool
  (STaR, RFT, RAFT, ReST, ReST-EM, LIMA, Fisher-SFT) fill it on every rank: N ranks train on
  N x batch_size rows (measured with 2 ranks, 2026-11-28); pass `--set batch_size=B/N` for
  theirs to stay B.
- **Loss normalisation.** Before the loss the loop sums the batch totals over ranks
  (`totals["rows"]`, `totals["tokens"]`), so each rank's loss is its share of the *global* batch
  loss (token-mean losses divide by the global token count, sequence means by the global row
  count), and gradients are **summed** over ranks (one `all_reduce`). Hence N ranks with B/N rows
  each take the step one process takes with B rows, to float round-off (tests/test_distributed.py).
  Additive statistics (loss, kl, clip_frac) are summed likewise; `collect`'s statistics (mean
  reward) are averaged over ranks.
- **Sampling RNG.** Each step, rank r reseeds torch from (seed, step, r): ranks draw independent
  samples, and a resumed run at the same world size samples what the uninterrupted one did.
- **One writer.** Rank 0 writes the Run, checkpoints and models; a checkpoint holds the full
  (unsharded) state, so a run resumes at any world size.
- **FSDP2** (`--fsdp`): `fully_shard` on every transformer block, then the root; gradients are
  reduce-scattered as sums; `generate` runs with `synced_gpus` so ranks whose samples end early
  keep joining the all-gathers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

SHARDED_CALLS = ("prompts", "demonstrations", "preference_pairs", "unpaired", "problems")
_collecting = False
_local = False


def launched() -> bool:
    """True in a process started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """More than one process is training together (and not inside `local()`)."""
    return not _local and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Train as a lone process inside (rank 0's one-off warm-start base): no collectives."""
    global _local
    was, _local = _local, True
    try:
        yield
    finally:
        _local = was


def rank() -> int:
    return dist.get_rank() if active() else 0


def size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: str) -> str:
    """Join the process group torchrun describes (environment variables), gloo on CPU and nccl on
    CUDA; returns this rank's device (`cuda` -> `cuda:LOCAL_RANK`). A no-op in a single process."""
    if not launched():
        return device
    d = torch.device(device)
    if d.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if d.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(obj):
    """Rank 0's `obj` (any picklable value) on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(x: Tensor | float) -> Tensor:
    """Sum over ranks (a new tensor; float64 for Python numbers)."""
    t = x.detach().clone() if torch.is_tensor(x) else torch.tensor(float(x), dtype=torch.float64)
    if active():
        dist.all_reduce(t)
    return t


def all_sum_dict(d: dict[str, float], mean: bool = False) -> dict[str, float]:
    """Sum (`mean`: average over the ranks that have it) each statistic over ranks; a key some
    rank lacks (a statistic logged only on some steps) counts as 0 in sums."""
    if not active():
        return d
    keys = sorted({k for part in _gather(sorted(d)) for k in part})
    vals = torch.tensor([[float(d.get(k, 0.0)), float(k in d)] for k in keys], dtype=torch.float64)
    vals = all_sum(vals.reshape(-1, 2))
    return {k: (v / n if mean else v) for k, (v, n) in zip(keys, vals.tolist(), strict=True) if n > 0}


def _gather(obj) -> list:
    out = [None] * size()
    dist.all_gather_object(out, obj)
    return out


def gather_objects(obj) -> list:
    """[rank 0's obj, rank 1's, ...] (picklable values); [obj] in a single process."""
    return _gather(obj) if active() else [obj]


def moments(x: Tensor, mask: Tensor, unbiased: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, variance, count) of x over mask == 1 on ALL ranks: the global batch's statistics
    (advantage whitening). variance divides by n - 1 (`unbiased`) or n.   x, mask [B, ...] -> scalars"""
    m = mask.to(x.dtype)
    s = all_sum(torch.stack([(x * m).sum(), m.sum()]))  # [sum x, n] over ranks
    mean, n = s[0] / s[1].clamp(min=1), s[1]
    ss = all_sum((((x - mean) * m) ** 2).sum())  # sum (x - mean)^2 over ranks
    return mean, ss / ((n - 1) if unbiased else n).clamp(min=1), n


# ------------------------------------------------------------------------------ data sharding
def shard(items: list, what: str = "items") -> list:
    """This rank's contiguous share of a step's items (rank r: items[r n / W : (r + 1) n / W])."""
    n, r, w = len(items), rank(), size()
    if n < w:
        raise ValueError(f"a step's {n} {what} cannot be split over {w} processes: raise the "
                         f"batch size (in prompts for group methods) to at least {w}")
    return items[r * n // w:(r + 1) * n // w]


@contextlib.contextmanager
def collecting() -> Iterator[None]:
    """While a step's batch is collected, `ShardedTask` data calls return this rank's share
    (outside, e.g. a method's one-off draw at construction, they return the whole draw)."""
    global _collecting
    was, _collecting = _collecting, True
    try:
        yield
    finally:
        _collecting = was


class ShardedTask:
    """A task as one rank sees it: during `collecting()`, the data calls (SHARDED_CALLS) return
    this rank's share of what every rank draws alike; everything else is the task's own."""

    def __init__(self, task):
        object.__setattr__(self, "_task", task)

    def __getattr__(self, name: str):
        value = getattr(self._task, name)
        if name not in SHARDED_CALLS:
            return value

        def call(*args, **kwargs):
            items = value(*args, **kwargs)
            return shard(items, name) if _collecting and active() else items

        return call

    def __setattr__(self, name: str, value) -> None:
        setattr(self._task, name, value)  # e.g. runner._use_reward_model swaps task.reward


def step_seed(seed: int, step: int) -> int:
    """The torch seed of rank r at `step` (distributed runs): a function of (seed, step, r)."""
    return ((seed * 1_000_003 + step) * 65_537 + rank()) % (2**63 - 1)


# ------------------------------------------------------------------------------ parameters
def is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule) or any(isinstance(m, FSDPModule) for m in module.modules())


def broadcast_params(module: nn.Module) -> None:
    """Every rank starts from rank 0's weights (plain modules; FSDP shards are already split)."""
    if active() and not is_fsdp(module):
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def sum_grads(params: list[nn.Parameter]) -> None:
    """Sum gradients over ranks in one flat all_reduce. A parameter with a gradient on some rank
    only gets a zero gradient on the others, so every rank steps the same parameters."""
    if not active():
        return
    has = all_sum(torch.tensor([p.grad is not None for p in params], dtype=torch.float64))
    live = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not live:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in live])
    dist.all_reduce(flat)
    offset = 0
    for p in live:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def fully_shard_model(module: nn.Module) -> nn.Module:
    """FSDP2: shard every transformer block (the classes HF lists in `_no_split_modules`), then the
    root; gradients reduce-scatter as sums (the loss is already normalised by global totals)."""
    from torch.distributed.fsdp import fully_shard

    blocks = {name for m in module.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    for m in list(module.modules()):
        if type(m).__name__ in blocks:
            fully_shard(m)
    fully_shard(module)
    for m in module.modules():
        if hasattr(m, "set_gradient_divide_factor"):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no pre-scaled sum)
    return module


def full_tensor(t: Tensor) -> Tensor:
    """The whole tensor of an FSDP shard (a collective: every rank calls it), or `t` itself."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def like_param(full: Tensor, param: Tensor) -> Tensor:
    """A full tensor laid out as `param` (sharded alike if it is an FSDP DTensor)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and full.shape == param.shape:
        return distribute_tensor(full.to(param.device), param.device_mesh, param.placements)
    return full
