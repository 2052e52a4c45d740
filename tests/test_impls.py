"""Every registry method whose `impl` is set imports, is runnable by the runner, and trains two steps."""

from __future__ import annotations

import importlib
import math

import pytest

import reference_impls.testing  # noqa: F401  (pins torch to one thread for stable timings)
from reference_impls import runner
from taxonomy.registry import load_registry

IMPLEMENTED = sorted(m.id for m in load_registry().methods.values() if m.impl)


def test_registry_and_runner_agree():
    assert sorted(runner.METHODS) == IMPLEMENTED
    for mid in IMPLEMENTED:
        assert importlib.import_module(load_registry()[mid].impl) is runner.METHODS[mid]


@pytest.mark.parametrize("method", IMPLEMENTED)
def test_two_steps_of_every_implemented_method(method, tmp_path):
    r = runner.run(method, steps=2, out=tmp_path, progress=False, seed=0)
    assert r.status == "finished" and len(r.history) == 2
    assert all(math.isfinite(v) for h in r.history for v in h.values())
    assert r.pipeline.stages[-1].method == method
    assert {x.origin for x in r.results} == {"measured"}
    assert (tmp_path / r.id / "run.json").exists()
