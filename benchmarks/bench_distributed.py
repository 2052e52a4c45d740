"""Data-parallel throughput on this machine: `sftrl run METHOD --nproc N` against one process.

    python benchmarks/bench_distributed.py --method sft --steps 100 --nproc 2
    python benchmarks/bench_distributed.py --method grpo --steps 20 --nproc 2 --device cuda

Each configuration is one `sftrl run` (subprocess); the figure is the median per-step wall time of
the recorded history (step 0, which pays one-off costs, left out) and steps/s from it. The one-process
rows pin torch to 1 and to N threads, so a CPU comparison shows what N processes buy over N threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(method: str, steps: int, extra: list[str], device: str) -> float:
    """Median seconds per step of one recorded run."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "sftrl_cli", "run", method, "--steps", str(steps),
               "--device", device, "--out", out, *extra]
        subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
        run = json.loads(next(Path(out).glob("*/run.json")).read_text())
    walls = [h["wall_s"] for h in run["history"] if h.get("stage") == run["history"][-1]["stage"]][1:]
    return statistics.median(walls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="sft")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    rows = [("1 process, 1 thread", ["--threads", "1"]),
            (f"1 process, {a.nproc} threads", ["--threads", str(a.nproc)]),
            (f"--nproc {a.nproc} (1 thread each)", ["--nproc", str(a.nproc)])]
    if a.device != "cpu":
        rows = [("1 process", []), (f"--nproc {a.nproc}", ["--nproc", str(a.nproc)])]
    print(f"{a.method}, {a.steps} steps, {a.device}: median s/step (steps/s)")
    for name, extra in rows:
        s = measure(a.method, a.steps, extra, a.device)
        print(f"  {name:32s} {s:.4f} s  ({1 / s:.1f} steps/s)", flush=True)


if __name__ == "__main__":
    main()
