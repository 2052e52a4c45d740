"""Shared test set-up: offline hub, the fixture catalogue, a temp copy helper."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# One torch thread per test process (and its subprocesses): scripts/test.sh runs two workers on two
# cores, and the tiny models gain nothing from intra-op threads (reference_impls/testing.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")

FIXTURES = Path(__file__).parent / "fixtures"
MINI = FIXTURES / "mini"


@pytest.fixture
def mini_dir(tmp_path: Path) -> Path:
    """A writable copy of the small fixture catalogue."""
    dst = tmp_path / "data"
    shutil.copytree(MINI, dst)
    return dst
