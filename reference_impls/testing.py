"""Shared helpers for the reference-implementation tests (tests/test_ref_*.py)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an accidental hub call fails fast

import torch  # noqa: E402

# The tiny preset is too small to gain from intra-op threads: on 2 shared cores, 1 thread measured
# 2.7 s per 100 SFT steps, 2 threads 3.5-34 s (OpenMP spinning against a noisy neighbour).
torch.set_num_threads(int(os.environ.get("SFTRL_TEST_THREADS", "1")))

from reference_impls.core.model import load_model  # noqa: E402
from reference_impls.core.train import seed_everything  # noqa: E402
from reference_impls.runner import METHODS  # noqa: E402
from reference_impls.tasks.addition import Addition  # noqa: E402
from reference_impls.tasks.base_model import warm_start  # noqa: E402


def make_algo(method: str, seed: int = 0, base: bool = False, task=None, **cfg):
    """A method's Algo on the tiny preset (or the warm-start base of addition), seeded, on `task`
    (default: addition; e.g. `Addition(cot=True)`)."""
    mod = METHODS[method]
    seed_everything(seed)
    model, tok = load_model(str(warm_start()) if base else "tiny")
    seed_everything(seed)
    return mod.Algo(model, tok, task or Addition(), mod.Config(**cfg), seed=seed)


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
