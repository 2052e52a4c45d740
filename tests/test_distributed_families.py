"""Many processes = one process, for every family beyond SFT/DPO/GRPO (tests/test_distributed.py):
the hybrids (row normalisers, ReLIFT's buffer, UFT's hint count, Prefix-RFT's entropy quantile),
KTO (z0 and its rotated rows), RLOO and REINFORCE++ and PPO (advantage whitening over the batch),
DAPO (its row quota). Two gloo ranks with half the batch each must take the steps one process
takes with the whole batch: loss, gradient norm and final parameters, to float round-off.

Sampling depends on the world size (each rank draws its own samples), so every process here
samples with the scripted sampler (reference_impls.testing.scripted_sample): a completion is a
function of (prompt, copy index), and one process and the two ranks see the same rows.
Run as a script (`torchrun ... tests/test_distributed_families.py OUT`), this file is the rank worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference_impls.testing import make_algo, params, scripted_sampling  # noqa: E402

STEPS = 3
# (method, options): 8 prompts a step (4 per rank), tiny random-init preset
CASES = {
    "luffy": ("luffy", dict(batch_size=16, group_size=4, lr=1e-3)),
    "hpt": ("hpt", dict(batch_size=16, group_size=2, lr=1e-3)),
    "srft": ("srft", dict(batch_size=16, group_size=2, lr=1e-3)),
    "chord": ("chord", dict(batch_size=16, group_size=2, expert_rows=4, lr=1e-3)),
    "nft": ("nft", dict(batch_size=16, group_size=2, lr=1e-3)),
    "uft": ("uft", dict(batch_size=16, group_size=2, lr=1e-3)),
    "relift": ("relift", dict(batch_size=16, group_size=2, buffer_size=2, updates_per_batch=2, lr=1e-3)),
    "prefix-rft": ("prefix-rft", dict(batch_size=32, group_size=4, n_prefix=2, top_entropy=0.5, lr=1e-3)),
    "kto": ("kto", dict(batch_size=8, lr=1e-3)),
    "rloo": ("rloo", dict(batch_size=16, group_size=2, normalize_advantages=True, lr=1e-3)),
    "reinforce-pp": ("reinforce-pp", dict(batch_size=8, beta=0.1, lr=1e-3)),
    "ppo": ("ppo", dict(batch_size=8, updates_per_batch=2, lr=1e-3)),
    "dapo": ("dapo", dict(batch_size=16, group_size=2, dynamic_sampling=False, lr=1e-3)),
    "dapo-quota": ("dapo", dict(batch_size=32, group_size=4, max_tries=3, lr=1e-3)),
}


def _cases() -> list[str]:
    """The cases to run: all, or those named in SFTRL_CASES (comma-separated; for debugging)."""
    only = [c for c in os.environ.get("SFTRL_CASES", "").split(",") if c]
    return [c for c in CASES if c in only] if only else list(CASES)


def _algo(case: str):
    method, options = CASES[case]
    algo = make_algo(method, steps=STEPS, **options)
    if method in ("rloo", "reinforce-pp", "ppo"):  # a policy away from its reference: KL != 0
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for p in (algo.policy if method == "ppo" else algo.module).parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return algo


def batch_statistics(rows: slice) -> dict[str, torch.Tensor]:
    """The collect-time batch statistics on `rows` of a crafted 8-row batch (a rank's half under
    torchrun, everything in one process): row normalisers, moments, Prefix-RFT's entropy cut."""
    from reference_impls.core import distributed
    from reference_impls.core.hybrid import row_weights
    from reference_impls.methods.prefix_rft import entropy_clipped_advantages

    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(8, 6, generator=g) < 0.7).float()
    ent = 4 * torch.rand(8, 6, generator=g)
    pre = (torch.rand(8, 6, generator=g) < 0.5).float() * mask
    adv = torch.randn(8, generator=g)
    sel = torch.tensor([1.0, 0, 1, 1, 0, 0, 0, 1])
    m, e, p, a, s = mask[rows], ent[rows], pre[rows], adv[rows], sel[rows]
    mean, var, n = distributed.moments(e, m, unbiased=True)
    return {"w_tok": row_weights(m, s), "w_const": row_weights(m, s, "constant", 6),
            "moments": torch.stack([mean, var, n]), "adv_tok": entropy_clipped_advantages(a, e, p, 0.3)}


def worker(out: Path) -> None:
    from reference_impls.core import distributed
    from reference_impls.core.train import train

    distributed.init("cpu")
    r = distributed.rank()
    torch.save(batch_statistics(slice(4 * r, 4 * r + 4)), out / f"stats-rank{r}.pt")
    with scripted_sampling():
        for case in _cases():
            algo = _algo(case)
            history = train(algo, algo.cfg, progress=False)
            torch.save({"history": history, "params": params(algo.module)},
                       out / f"{case}-rank{distributed.rank()}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ranks")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node", "2", __file__, str(out)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return {(c, k): torch.load(out / f"{c}-rank{k}.pt") for c in ["stats", *_cases()] for k in (0, 1)}


@pytest.fixture(scope="module")
def one_process(ranks) -> dict:
    from reference_impls.core.train import train

    out = {}
    with scripted_sampling():
        for case in _cases():
            algo = _algo(case)
            out[case] = (train(algo, algo.cfg, progress=False), params(algo.module))
    return out


def test_batch_statistics_are_the_whole_batch_s(ranks):
    whole = batch_statistics(slice(0, 8))
    r0, r1 = ranks["stats", 0], ranks["stats", 1]
    for k in ("w_tok", "w_const", "adv_tok"):  # per row: rank 0's rows then rank 1's
        torch.testing.assert_close(torch.cat([r0[k], r1[k]]), whole[k], msg=k)
    torch.testing.assert_close(r0["moments"], whole["moments"])  # every rank: the global ones
    torch.testing.assert_close(r1["moments"], whole["moments"])
    assert (whole["adv_tok"] == 0).any()  # the entropy cut acted


@pytest.mark.parametrize("case", [c for c in CASES if c != "dapo-quota"])
def test_two_ranks_take_the_one_process_step(ranks, one_process, case):
    r0, r1 = ranks[case, 0], ranks[case, 1]
    for k, v in r0["params"].items():  # one model on every rank
        assert torch.equal(v, r1["params"][k]), k
    history, got = one_process[case]
    assert all(h["grad_norm"] > 1e-4 for h in history)  # real steps (NFT: loss 0 at rho = 1)
    for a, b in zip(history, r0["history"], strict=True):  # a normaliser off by N: loss, norm x N
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5), (case, a["step"])  # sums
        for k in ("grad_norm", "rows", "tokens"):  # that cancel: round-off ~1e-6 absolute
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), (case, a["step"], k)
    for k, v in r0["params"].items():
        # atol: Adam turns round-off in near-zero gradients into moves of up to ~lr (1e-3) a step
        torch.testing.assert_close(v, got[k], rtol=0, atol=3e-4, msg=f"{case}: {k}")


def test_relift_takes_sft_steps_on_the_gathered_buffer(ranks, one_process):
    history, _ = one_process["relift"]
    kinds = [h["sft_step"] for h in history]
    assert 1.0 in kinds and 0.0 in kinds  # both kinds of step were compared
    assert [h["sft_step"] for h in ranks["relift", 0]["history"]] == kinds


def test_dapo_quota_is_the_whole_batch_over_two_ranks(ranks):
    """Dynamic sampling fills each rank's share of the step's groups: two ranks together train on
    at most batch_size rows (before: each rank filled batch_size)."""
    B = CASES["dapo-quota"][1]["batch_size"]
    for h in ranks["dapo-quota", 0]["history"]:
        assert h["rows"] <= B and h["rows"] % 4 == 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker(Path(sys.argv[1]))
