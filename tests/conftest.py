"""Shared test set-up: offline hub, the fixture catalogue, a temp copy helper."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

FIXTURES = Path(__file__).parent / "fixtures"
MINI = FIXTURES / "mini"


@pytest.fixture
def mini_dir(tmp_path: Path) -> Path:
    """A writable copy of the small fixture catalogue."""
    dst = tmp_path / "data"
    shutil.copytree(MINI, dst)
    return dst
