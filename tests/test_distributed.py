"""Data-parallel training (reference_impls/core/distributed.py) on this CPU: gloo, 2 processes
started by torchrun.

Two ranks with half the batch each must take the steps one process takes with the whole batch
(loss, gradient norm and final parameters, to float round-off) for SFT, DPO and GRPO; and
`sftrl run sft --nproc 2` must record one finished Run with a one-process run's losses.
GRPO samples, and samples depend on the world size: the one-process reference replays the
rollouts the two ranks sampled (merged into one batch), so what is compared is the sharding, the
normalisation and the gradient reduction, not the sampler.
Run as a script (`torchrun ... tests/test_distributed.py OUT`), this file is the rank worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference_impls.testing import make_algo, params  # noqa: E402

# tiny batches (8 rows: 4 per rank), a few steps; GRPO: 4 prompts x 2 completions, KL on;
# "-fsdp": the same with parameters sharded by FSDP2 (gloo runs it on CPU)
OPTIONS = {
    "sft": dict(batch_size=8, warmup_steps=0),
    "dpo": dict(batch_size=8),
    "grpo": dict(batch_size=8, group_size=2, beta=0.04, lr=1e-3),
}
CASES = [*OPTIONS, "sft-fsdp", "grpo-fsdp"]
STEPS = 3


def _algo(case: str):
    method = case.removesuffix("-fsdp")
    return make_algo(method, base=method != "sft", steps=STEPS, **OPTIONS[method])


def worker(out: Path) -> None:
    """One rank: train each case, save its history, final parameters and collected batches."""
    from reference_impls.core import distributed
    from reference_impls.core.train import train

    distributed.init("cpu")
    for method in CASES:
        algo = _algo(method)
        batches, collect = [], algo.collect

        def recording(step, collect=collect, batches=batches):
            batch, log = collect(step)
            batches.append({k: v.clone() for k, v in batch.items()})
            return batch, log

        algo.collect = recording
        history = train(algo, algo.cfg, progress=False, fsdp=method.endswith("-fsdp"))
        weights = {k: distributed.full_tensor(v) for k, v in params(algo.module).items()}
        torch.save({"history": history, "params": weights, "batches": batches},
                   out / f"{method}-rank{distributed.rank()}.pt")
    algo = _algo("sft")  # interrupted after 2 of 3 steps: rank 0 writes the full-state checkpoint
    train(algo, algo.cfg, progress=False, checkpoint=out / "sft.ckpt", stop_after=2)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> dict:
    from reference_impls.tasks.base_model import warm_start

    warm_start()  # the cached base, built here once, not by two ranks at once
    out = tmp_path_factory.mktemp("ranks")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node", "2", __file__, str(out)],
                       capture_output=True, text=True, timeout=240, env=_env(), cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return {"out": out} | {(m, k): torch.load(out / f"{m}-rank{k}.pt") for m in CASES for k in (0, 1)}


def merge(parts: list[dict], pad_id: int) -> dict:
    """One batch from rank batches `[left-padded prompt | right-padded completion]` of different
    widths: re-pad both regions (per-token keys [n, T-1] are shifted alike)."""
    widths = []
    for b in parts:
        T = b["input_ids"].shape[1]
        P = int(b["mask"].any(0).float().argmax()) + 1  # prompt width
        widths.append((P, T - P))
    P, C = max(w[0] for w in widths), max(w[1] for w in widths)
    out: dict[str, list] = {}
    for b, (p, c) in zip(parts, widths, strict=True):
        for k, v in b.items():
            if v.dim() == 2:
                v = torch.nn.functional.pad(v, (P - p, C - c), value=pad_id if k == "input_ids" else 0)
            out.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}


@pytest.mark.parametrize("method", CASES)
def test_two_ranks_take_the_one_process_step(ranks, method):
    r0, r1 = ranks[method, 0], ranks[method, 1]
    for k, v in r0["params"].items():  # one model: every rank holds the same weights
        assert torch.equal(v, r1["params"][k]), k
    for b0, b1 in zip(r0["batches"], r1["batches"], strict=True):  # each rank built half the rows
        n0, n1 = (len(next(iter(b.values()))) for b in (b0, b1))
        assert n0 == n1 == OPTIONS[method.removesuffix("-fsdp")]["batch_size"] // 2

    algo = _algo(method)
    if method.startswith("grpo"):
        for b in r0["batches"] + r1["batches"]:  # whole groups per rank: advantages sum to 0 per group
            assert torch.allclose(b["advantages"].view(-1, 2).sum(-1), torch.zeros(2), atol=1e-6)
        assert any(b["advantages"].abs().sum() > 0 for b in r0["batches"] + r1["batches"])  # a real step
        pad = algo.tok.pad_token_id
        algo.collect = lambda step: (merge([r0["batches"][step], r1["batches"][step]], pad), {})
    else:  # deterministic data: rank 0's rows then rank 1's are the one-process batch
        full, _ = algo.collect(0)
        if method.startswith("sft"):
            both = merge([r0["batches"][0], r1["batches"][0]], algo.tok.pad_token_id)
            assert all(torch.equal(both[k], full[k]) for k in full)
        else:
            both = torch.cat([r0["batches"][0]["ref_chosen"], r1["batches"][0]["ref_chosen"]])
            torch.testing.assert_close(both, full["ref_chosen"])
    from reference_impls.core.train import train

    one = train(algo, algo.cfg, progress=False)
    for a, b in zip(one, r0["history"], strict=True):
        for k in ("loss", "grad_norm", "rows", "tokens"):
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), (method, a["step"], k)
    got = params(algo.module)
    for k, v in r0["params"].items():
        # atol: Adam turns round-off in near-zero gradients into ~1e-6 moves (the steps move ~1e-2)
        torch.testing.assert_close(v, got[k], rtol=0, atol=2e-5, msg=f"{method}: {k}")


def test_a_two_rank_checkpoint_resumes_in_one_process(ranks, tmp_path):
    from reference_impls.core.train import train

    whole = _algo("sft")
    train(whole, whole.cfg, progress=False)
    ckpt = tmp_path / "sft.ckpt"
    ckpt.write_bytes((ranks["out"] / "sft.ckpt").read_bytes())
    resumed = _algo("sft")
    h = train(resumed, resumed.cfg, progress=False, checkpoint=ckpt, resume=ckpt)
    assert [x["step"] for x in h] == [0.0, 1.0, 2.0]  # two steps from the ranks, one here
    a, b = params(whole.module), params(resumed.module)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-5)


def test_sftrl_run_nproc_2_records_one_run(tmp_path):
    out = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "sftrl_cli", "run", "sft", "--nproc", "2", "--steps", "3",
                        "--out", str(out)], capture_output=True, text=True, timeout=240, env=_env(), cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count("finished") == 1  # rank 0 reports
    runs = list(out.iterdir())
    assert len(runs) == 1 and (runs[0] / "stage-1" / "model" / "config.json").exists()
    rec = json.loads((runs[0] / "run.json").read_text())
    assert rec["status"] == "finished" and [h["rows"] for h in rec["history"]] == [64.0] * 3
    # one process, measured 2026-11-28: losses 3.9297, 3.8752, 3.7539 (tiny preset, seed 0)
    assert [h["loss"] for h in rec["history"]] == pytest.approx([3.9297, 3.8752, 3.7539], abs=2e-3)


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker(Path(sys.argv[1]))
