"""Findings (issue 20): the sampled metrics' estimators against hand numbers, the ladder task's
splits, and the findings' declarations and verdict functions on miniature runs."""

from __future__ import annotations

import math
import random

import pytest
import torch

from reference_impls.core import evaluate as ev

# ------------------------------------------------------------------------------ pass@k


def test_pass_at_k_hand_numbers():
    assert ev.pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2) = 1 - 1/6
    assert ev.pass_at_k(10, 3, 4) == pytest.approx(5 / 6)  # 1 - C(7,4)/C(10,4) = 1 - 35/210
    assert ev.pass_at_k(5, 1, 1) == pytest.approx(0.2)  # pass@1 = c/n
    assert ev.pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    assert ev.pass_at_k(4, 0, 4) == 0.0
    assert ev.pass_at_k(4, 1, 4) == 1.0  # every 4-subset of 4 holds the correct one
    assert ev.pass_at_k(256, 1, 64) == pytest.approx(0.25)  # one correct in n: k/n


def test_pass_at_k_is_the_subset_average():
    """pass@k = the fraction of k-subsets of the n samples holding a correct one (brute force)."""
    from itertools import combinations

    n, c = 7, 2
    verdicts = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(combinations(verdicts, k))
        assert ev.pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_mean_pass_at_k_per_problem():
    correct = [True, True, False, False] + [False] * 4  # problem 1: c=2, problem 2: c=0 (n=4)
    assert ev.mean_pass_at_k(correct, 4, (1, 2)) == pytest.approx({"pass@1": 0.25, "pass@2": 5 / 12})


def test_pass_at_k_rejects_bad_input_and_parses_k():
    with pytest.raises(ValueError):
        ev.pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        ev.pass_at_k(4, 1, 8)  # k > n
    assert ev.parse_ks("64, 1,8") == (1, 8, 64)
    assert ev.parse_ks(None) == ev.PASS_K
    for bad in ("0", "a,b", ""):
        with pytest.raises(ValueError, match="--pass-k"):
            ev.parse_ks(bad)


# ------------------------------------------------------------------------------ KL and entropy


def test_token_kl_forward_direction_hand_numbers():
    """KL(base || pi) with base (.5, .5) and pi (.9, .1): .5 ln(.5/.9) + .5 ln(.5/.1) = 0.5108;
    the reverse KL(pi || base) would be .9 ln 1.8 + .1 ln .2 = 0.3681."""
    lb = torch.tensor([[[0.5, 0.5]]]).log()
    lp = torch.tensor([[[0.9, 0.1]]]).log()
    fwd = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert float(ev.token_kl(lb, lp, torch.ones(1, 1))) == pytest.approx(fwd, abs=1e-6)
    assert fwd == pytest.approx(0.5108, abs=1e-4)
    two = torch.cat([lb, lb], 1), torch.cat([lp, lb], 1)  # second position: identical distributions
    assert float(ev.token_kl(*two, torch.tensor([[1.0, 1.0]]))) == pytest.approx(fwd, abs=1e-6)
    assert float(ev.token_kl(*two, torch.tensor([[0.0, 1.0]]))) == pytest.approx(0.0, abs=1e-7)


def test_token_entropy_hand_numbers():
    lp = torch.tensor([[[0.5, 0.5], [0.5, 0.5], [1.0, 1e-30]]]).log()
    assert float(ev.token_entropy_sum(lp, torch.tensor([[1.0, 0.0, 0.0]]))) == pytest.approx(math.log(2))
    assert float(ev.token_entropy_sum(lp, torch.tensor([[1.0, 1.0, 1.0]]))) == pytest.approx(2 * math.log(2), abs=1e-6)


def test_sampled_metrics_and_kl_on_tiny_models():
    """End to end on two tiny models: KL(base || base) = 0, KL(base || other) > 0 and matches the
    Monte-Carlo log-ratio estimate; pass@k rises with k; length counts EOS."""
    from reference_impls.core.model import load_model
    from reference_impls.core.train import seed_everything
    from reference_impls.tasks.ladder import Ladder

    task = Ladder(max_id=1, ood_extra=1, per_level=10)
    seed_everything(0)
    base, tok = load_model("tiny", chars=task.alphabet())
    other, _ = load_model("tiny", chars=task.alphabet())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.3 * torch.randn_like(p))
    probs = task.eval_sets["in_distribution"]
    assert ev.kl_to_base(base, base, tok, task, probs, samples=2) == pytest.approx(0.0, abs=1e-5)
    torch.manual_seed(1)
    kl = ev.kl_to_base(other, base, tok, task, probs, samples=64)
    assert kl > 0.01
    from reference_impls.core.sampling import sample  # Monte-Carlo: mean of log base(y) - log pi(y)

    ro = sample(base, tok, [p.prompt for p in probs for _ in range(200)], task.max_new_tokens)
    lb, mask = ev._score(base, ro)
    lp, _ = ev._score(other, ro)
    y = ro.input_ids[:, 1:, None]
    mc = float(((lb.gather(-1, y) - lp.gather(-1, y)).squeeze(-1) * mask).sum()) / len(ro)
    assert kl == pytest.approx(mc, rel=0.15)
    m = ev.sampled_metrics(other, tok, task, probs, ks=(1, 4, 16))
    assert 0.0 <= m["pass@1"] <= m["pass@4"] <= m["pass@16"] <= 1.0
    assert 1.0 <= m["length"] <= task.max_new_tokens and m["entropy"] > 0


# ------------------------------------------------------------------------------ the ladder task


def test_ladder_splits_and_sliver():
    from reference_impls.tasks import make_task

    t = make_task("ladder", {"max_id": 2, "ood_extra": 2, "sliver": 0.1, "per_level": 30})
    ids = {p.meta for p in t.eval_sets["in_distribution"]}
    oods = {p.meta for p in t.eval_sets["out_of_distribution"]}
    assert ids == {1, 2} and oods == {3, 4}
    held = {p.prompt for s in t.eval_sets.values() for p in s}
    train = t.problems(4000, random.Random(0))
    assert not held & {p.prompt for p in train}  # never a held-out problem
    frac = sum(p.meta > 2 for p in train) / len(train)
    assert 0.08 < frac < 0.12  # the sliver
    assert all(t.reward(p, p.solution) == 1.0 and t.reward(p, p.answer + "1") == 0.0 for p in train[:50])
    assert len([p for p in t.eval_sets["in_distribution"] if p.meta == 1]) == 20  # a fifth of 100
    zero = make_task("ladder", {"sliver": 0.0})
    assert all(p.meta <= zero.max_id for p in zero.problems(2000, random.Random(1)))
    with pytest.raises(ValueError, match="sliver"):
        make_task("ladder", {"sliver": 2})


# ------------------------------------------------------------------------------ findings


def _data(who_vals: dict[str, list[dict[str, float]]]) -> dict:
    return {who: {str(s): v for s, v in enumerate(vals)} for who, vals in who_vals.items()}


def test_findings_declared_before_running():
    from reference_impls.findings import FINDINGS, VERDICTS

    need = {"limit-of-rlvr", "rl-razor", "sft-memorizes-rl-generalizes", "edge-of-competence"}
    assert need < set(FINDINGS) and len(FINDINGS) >= 5  # four findings and a control
    for f in FINDINGS.values():
        assert f.arxiv and f.sources and f.paper_says and f.statistic and f.decide in VERDICTS
        assert f.seeds >= 5 and f.sources[0].startswith("https://arxiv.org/abs/")


def test_limit_of_rlvr_verdicts():
    from reference_impls.findings import FINDINGS, limit_of_rlvr

    f = FINDINGS["limit-of-rlvr"]
    K = max(f.ks)
    base = [{"id pass@1": 0.50 + e, f"id pass@{K}": 0.90 + e} for e in (0, 0.01, -0.01, 0.02, 0.0)]
    rl_claim = [{"id pass@1": 0.70 + e, f"id pass@{K}": 0.80 + e} for e in (0, 0.01, -0.01, 0.0, 0.02)]
    rl_tie_k = [{"id pass@1": 0.70 + e, f"id pass@{K}": 0.90 + e} for e in (0, 0.01, -0.01, 0.0, 0.02)]
    rl_better = [{"id pass@1": 0.70 + e, f"id pass@{K}": 0.99 + e / 10} for e in (0, 0.01, -0.01, 0.0, 0.02)]
    assert limit_of_rlvr(f, _data({"base": base, "grpo": rl_claim}))["verdict"] == "reproduced"
    assert limit_of_rlvr(f, _data({"base": base, "grpo": rl_tie_k}))["verdict"] == "partly"
    assert limit_of_rlvr(f, _data({"base": base, "grpo": rl_better}))["verdict"] == "not_reproduced"


def test_sft_rl_ood_verdicts_are_opposite_claims():
    from reference_impls.findings import FINDINGS, rl_beats_sft_ood, rl_not_above_sft_ood

    f = FINDINGS["sft-memorizes-rl-generalizes"]
    sft = [{"ood greedy": 0.10 + e} for e in (0, 0.01, 0.02, -0.01, 0)]
    grpo = [{"ood greedy": 0.30 + e} for e in (0, 0.02, 0.01, 0, -0.01)]
    d = _data({"sft": sft, "grpo": grpo})
    assert rl_beats_sft_ood(f, d)["verdict"] == "reproduced"
    assert rl_not_above_sft_ood(f, d)["verdict"] == "not_reproduced"
    swapped = _data({"sft": grpo, "grpo": sft})
    assert rl_beats_sft_ood(f, swapped)["verdict"] == "not_reproduced"
    assert rl_not_above_sft_ood(f, swapped)["verdict"] == "reproduced"


def test_edge_of_competence_verdict():
    from reference_impls.findings import FINDINGS, edge_of_competence

    f = FINDINGS["edge-of-competence"]
    key = f"ood pass@{max(f.ks)}"
    noise = (0, 0.01, -0.01, 0.02, 0.0)
    base = [{key: 0.30} for _ in noise]
    arms = {"rl-easy": 0.30, "rl-edge": 0.45, "rl-far": 0.29}
    d = _data({"base": base, **{a: [{key: v + e} for e in noise] for a, v in arms.items()}})
    assert edge_of_competence(f, d)["verdict"] == "reproduced"
    d["rl-far"] = d["rl-edge"]
    assert edge_of_competence(f, d)["verdict"] == "partly"


def test_findings_cli_list_and_refusals(tmp_path):
    from typer.testing import CliRunner

    from sftrl_cli import app

    r = CliRunner().invoke(app, ["findings", "list"])
    assert r.exit_code == 0 and "limit-of-rlvr" in r.output and "not runnable yet" in r.output
    r = CliRunner().invoke(app, ["findings", "run", "rl-razor", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "cannot run yet" in r.output
    r = CliRunner().invoke(app, ["findings", "run", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "known:" in r.output


def test_miniature_finding_end_to_end(tmp_path, monkeypatch):
    """A miniature limit-of-rlvr (2 seeds, a 40-step base, 2 GRPO steps): the arena runs, the base and
    the final models are measured, the verdict function decides, the three files are written."""
    import json

    from reference_impls import findings as fd

    monkeypatch.setenv("SFTRL_CACHE", str(tmp_path / "cache"))
    mini = fd.FINDINGS["limit-of-rlvr"].model_copy(update={
        "name": "mini", "seeds": 2, "budget": 128, "base_steps": 40, "ks": [1, 2, 4],
        "task_options": {**fd.LADDER, "per_level": 10}})
    monkeypatch.setitem(fd.FINDINGS, "mini", mini)
    res = fd.run_finding("mini", tmp_path / "out", log=lambda m: None)
    assert res["verdict"] in ("reproduced", "partly", "not_reproduced")
    saved = json.loads((tmp_path / "out" / "finding.json").read_text())
    assert saved["verdict"] == res["verdict"] and set(saved["per_seed"]) == {"base", "grpo"}
    assert {"0", "1"} == set(saved["per_seed"]["grpo"]) and "id pass@4" in saved["per_seed"]["base"]["0"]
    assert "kl_to_base" in saved["per_seed"]["grpo"]["0"]
    assert "Verdict" in (tmp_path / "out" / "finding.md").read_text()
    assert (tmp_path / "out" / "finding.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "out" / "measured.json").read_text())) == 4  # 2 base + 2 GRPO, kept


def test_sampled_metrics_groups_use_the_same_samples(monkeypatch):
    """Per-group pass@k equals pass@k over that group's problems (a fake sampler: answer '1' always)."""
    from reference_impls.core.sampling import Rollout
    from reference_impls.tasks.base import Problem

    def fake_sample(model, tok, prompts, budget, temperature=1.0, **kw):
        B = len(prompts)
        return Rollout(torch.zeros(B, 3, dtype=torch.long), torch.ones(B, 3, dtype=torch.long),
                       torch.ones(B, 2), ["1"] * B, 1)

    monkeypatch.setattr(ev, "sample", fake_sample)
    monkeypatch.setattr(ev, "_score", lambda model, ro: (torch.full((len(ro), 2, 2), math.log(0.5)), ro.mask))

    class T:
        max_new_tokens = 4

        @staticmethod
        def reward(p, c):
            return float(c == p.answer)

    probs = [Problem("a", "1", "1", meta=1), Problem("b", "2", "2", meta=1), Problem("c", "1", "1", meta=2)]
    m = ev.sampled_metrics(torch.nn.Linear(1, 1), None, T, probs, ks=(1, 2), by=lambda p: f"level{p.meta}")
    assert m["pass@1"] == pytest.approx(2 / 3) and m["level1 pass@1"] == pytest.approx(0.5)
    assert m["level2 pass@2"] == 1.0 and m["entropy"] == pytest.approx(math.log(2)) and m["length"] == 2.0


def test_shortcut_cue_correlates_in_training_only():
    from reference_impls.tasks import make_task

    t = make_task("shortcut", {"cue_corr": 0.9})
    train = t.problems(3000, random.Random(0))
    hit = sum(p.meta[1] for p in train) / len(train)
    assert 0.88 < hit < 0.94  # 0.9 + 0.1 * 0.1 by chance
    ood = t.eval_sets["out_of_distribution"]
    assert 0.05 < sum(p.meta[1] for p in ood) / len(ood) < 0.16
    held = {p.prompt[2:] for s in t.eval_sets.values() for p in s}
    assert not held & {p.prompt[2:] for p in train}
    assert all(t.reward(p, p.solution) == 1.0 for p in ood)
