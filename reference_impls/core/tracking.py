"""Experiment tracking for `sftrl run --report-to tensorboard,trackio,jsonl`: every step's history
entry (loss, reward, the diagnostics of core/diagnostics.py, eval points) is also written with
the real libraries, offline, under the run folder; nothing leaves the machine.

    RUN/metrics.jsonl   jsonl: one JSON object per step (no dependency)
    RUN/tensorboard/    tensorboard: tensorboard --logdir RUN/tensorboard
    RUN/trackio/        trackio (project "sftrl", run = the run id):
                        TRACKIO_DIR=RUN/trackio trackio show --project sftrl

The x axis is the step of the whole Run (stages laid end to end; `stage` is logged too). Under
torchrun only rank 0 writes. tensorboard and trackio are the `[track]` extra of pyproject.toml.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

REPORTERS = ("jsonl", "tensorboard", "trackio")


def parse_report_to(spec: str | list[str] | None) -> list[str]:
    """'tensorboard,jsonl' -> ['tensorboard', 'jsonl'] ('none' or empty: []); one clear error line
    for an unknown name or a missing library."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    kinds = [x.strip().lower() for x in items if x.strip() and x.strip().lower() != "none"]
    for k in kinds:
        if k not in REPORTERS:
            raise ValueError(f"--report-to: unknown tracker {k!r}; known: {', '.join(REPORTERS)}, none")
    for k, module in (("tensorboard", "tensorboard"), ("trackio", "trackio")):
        if k in kinds and not _importable(module):
            raise ValueError(f"--report-to {k}: the {module} package is not installed "
                             f"(pip install -e '.[track]' or '{module}')")
    return list(dict.fromkeys(kinds))


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _use_trackio_dir(path: Path):
    """trackio reads TRACKIO_DIR when first imported; point it (and its modules, if a previous
    run in this process imported it) at `path`."""
    os.environ["TRACKIO_DIR"] = str(path)
    import trackio

    for name in ("trackio", "trackio.utils", "trackio.sqlite_storage", "trackio.registry_bucket"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "TRACKIO_DIR"):
            mod.TRACKIO_DIR = path
    return trackio


class Tracker:
    """Writers for the chosen trackers; `log(entry)` after each step, `close()` at the end."""

    def __init__(self, kinds: list[str], rdir: Path, run_id: str, config: dict):
        self.kinds, self.rdir, self.step = kinds, Path(rdir), 0
        self.jsonl = self.tb = self.trackio = None
        if not kinds:
            return
        self.rdir.mkdir(parents=True, exist_ok=True)
        if "jsonl" in kinds:
            self.jsonl = (self.rdir / "metrics.jsonl").open("a")
        if "tensorboard" in kinds:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(self.rdir / "tensorboard"))
        if "trackio" in kinds:
            (self.rdir / "trackio").mkdir(exist_ok=True)
            self.trackio = _use_trackio_dir(self.rdir / "trackio")
            scalars = {k: v for k, v in config.items() if isinstance(v, str | int | float | bool)}
            self.trackio.init(project="sftrl", name=run_id, config=scalars, embed=False,
                              resume="allow")

    def log(self, entry: dict[str, float]) -> None:
        step = self.step
        self.step += 1
        scalars = {k: float(v) for k, v in entry.items() if isinstance(v, int | float)}
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({"global_step": step, **scalars}) + "\n")
            self.jsonl.flush()
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}", v, step)
            self.tb.flush()
        if self.trackio is not None:
            self.trackio.log(scalars, step=step)

    def chain(self, on_step: Callable[[dict], None] | None, stage: int) -> Callable[[dict], None] | None:
        """An `on_step` for core.train.train that runs `on_step` first (eval points), then logs."""
        if not self.kinds:
            return on_step

        def both(log: dict) -> None:
            if on_step is not None:
                on_step(log)
            self.log({"stage": float(stage), **log})

        return both

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.trackio is not None:
            self.trackio.finish()
        self.jsonl = self.tb = self.trackio = None
