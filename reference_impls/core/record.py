"""The run record: versions, hardware, git commit, atomic run.json writes."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from taxonomy.schema import Run

REPO = Path(__file__).resolve().parents[2]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("sftrl", "torch", "transformers", "tokenizers", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def hardware(device: str | torch.device) -> str:
    device = torch.device(device)
    cpu = f"{platform.machine()} x{os.cpu_count()} cpus ({platform.system()})"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}; {cpu}"
    return cpu


def git_commit() -> str | None:
    """`git rev-parse HEAD` of the repository, or None outside a git checkout."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def write_atomic(path: Path, text: str) -> None:
    """Write a file atomically (tmp file + os.replace): a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_run(run: Run, path: Path) -> None:
    write_atomic(path, run.model_dump_json(indent=2))
