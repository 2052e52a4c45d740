"""Entropy control and data-centric RL: entropy-bonus, clip-cov, kl-cov, entropy-advantage, greso,
pods, sec (reference_impls/methods/*.py, shared machinery in reference_impls/core/rl_data.py).

Value checks: entropy-bonus against TRL 1.16's GRPOTrainer `entropy_coef` (loss value and full
gradient, float32 round-off tolerances as tests/test_parity_trl.py); the others by hand from the
paper's equation on small tensors (arithmetic in the comments), the data methods' selection /
skip / bandit rules on scripted inputs. Learning: each method from the warm base on addition
raises the held-out mean reward past base + MARGIN, which its sign-flipped loss misses.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

import reference_impls.testing  # noqa: F401  (HF offline, 1 torch thread)
from reference_impls.core.logprobs import token_entropy, token_logprobs
from reference_impls.core.model import load_model
from reference_impls.core.train import seed_everything, split, train
from reference_impls.methods import (
    clip_cov,
    entropy_advantage,
    entropy_bonus,
    greso,
    kl_cov,
    pods,
    sec,
)
from reference_impls.tasks.addition import Addition, mean_reward
from reference_impls.tasks.base import Problem
from reference_impls.tasks.base_model import warm_start
from reference_impls.testing import crafted_grpo_batch, flat_grad, save_parity_tiny  # noqa: F401

METHODS = ["entropy-bonus", "clip-cov", "kl-cov", "entropy-advantage", "greso", "pods", "sec"]


def module(method: str):
    return importlib.import_module(f"reference_impls.methods.{method.replace('-', '_')}")


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# ------------------------------------------------------------------ entropy-bonus vs TRL 1.16
VALUE_RTOL, GRAD_RTOL, GRAD_ATOL = 5e-6, 5e-6, 1e-7  # as tests/test_parity_trl.py
G, P, T = 8, 6, 8  # completions (2 groups of 4), prompt width, completion width


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parity tests' tiny model (reference_impls.testing.save_parity_tiny), saved once."""
    return save_parity_tiny(tmp_path_factory.mktemp("tiny"))




crafted_batch = crafted_grpo_batch  # reference_impls.testing


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize(("loss_type", "ours"), [("grpo", "seq-mean-token-mean"), ("dapo", "token-mean")])
def test_entropy_bonus_matches_trl_entropy_coef(tiny_dir, tmp_path, loss_type, ours):
    """TRL: loss = L_policy(loss_type) - entropy_coef * token-mean(H) (GRPOTrainer._compute_loss).
    Ours: entropy_bonus_loss (pure) and entropy_bonus.Algo.loss (the training step), same batch."""
    from datasets import Dataset
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import GRPOConfig, GRPOTrainer

    model = LlamaForCausalLM.from_pretrained(tiny_dir).train()
    with torch.no_grad():  # perturb: a non-uniform policy with varied entropies
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    tok = PreTrainedTokenizerFast.from_pretrained(tiny_dir)
    coef = 0.3  # large enough that the entropy term visibly moves value and gradient
    args = GRPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none",
                      save_strategy="no", max_steps=1, per_device_train_batch_size=G, num_generations=4,
                      max_completion_length=T, loss_type=loss_type, beta=0.0, entropy_coef=coef)
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                          args=args, train_dataset=Dataset.from_dict({"prompt": ["1+2=", "33+40="]}),
                          processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1
    b = crafted_batch()
    loss_trl = trainer._compute_loss(model, dict(b, num_items_in_batch=b["completion_mask"].sum()))
    g_trl = flat_grad(model, loss_trl)

    ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
    am = torch.cat([b["prompt_mask"], b["completion_mask"]], 1)
    logits = model(input_ids=ids, attention_mask=am).logits  # [G, P+T, V]
    logp, ent = token_logprobs(logits, ids)[:, -T:], token_entropy(logits)[:, -T:]  # [G, T]
    mask = b["completion_mask"].float()
    loss_ours, _ = entropy_bonus.entropy_bonus_loss(logp, logp.detach(), ent, b["advantages"], mask, coef,
                                                    aggregation=ours, max_len=T)
    no_bonus, _ = entropy_bonus.entropy_bonus_loss(logp, logp.detach(), ent, b["advantages"], mask, 0.0,
                                                   aggregation=ours, max_len=T)
    assert abs(loss_ours.item() - no_bonus.item()) > 0.1  # the entropy term is not negligible here
    algo = entropy_bonus.Algo(model, tok, Addition(), entropy_bonus.Config(
        entropy_coef=coef, aggregation=ours, max_new_tokens=T, group_size=4))
    pad = torch.zeros(G, P - 1)
    micro = {"input_ids": ids, "attention_mask": am, "mask": torch.cat([pad, mask], 1),
             "advantages": b["advantages"]}
    loss_algo, _ = algo.loss(micro, {"rows": G, "tokens": mask.sum()})
    for loss in (loss_ours, loss_algo):
        g = flat_grad(model, loss)
        assert abs(loss.item() - loss_trl.item()) <= VALUE_RTOL * abs(loss_trl.item()) + 1e-7
        scale = g_trl.abs().max().item()
        assert scale > 0 and (g - g_trl).abs().max().item() <= GRAD_RTOL * scale + GRAD_ATOL


# --------------------------------------------------------------------------- covariance methods
# Shared 2 x 2 example (all tokens valid): logp = [[-0.1, -2.1], [-1.1, -0.5]], A = [2, -2].
# mean A = 0, mean logp = -3.8 / 4 = -0.95, so Cov = (A - 0)(logp + 0.95):
#   (0,0) 2 * 0.85 = 1.7   (0,1) 2 * -1.15 = -2.3   (1,0) -2 * -0.15 = 0.3   (1,1) -2 * 0.45 = -0.9
LOGP0 = [[-0.1, -2.1], [-1.1, -0.5]]
ADV = torch.tensor([2.0, -2.0], dtype=torch.float64)
COV = [[1.7, -2.3], [0.3, -0.9]]


def test_token_covariance_by_hand_and_masked():
    cov = clip_cov.token_covariance(torch.tensor(LOGP0, dtype=torch.float64), ADV, torch.ones(2, 2))
    assert torch.allclose(cov, torch.tensor(COV, dtype=torch.float64), atol=1e-12)
    # a padded third column (huge logp, mask 0) must not move the means
    logp = torch.tensor([[-0.1, -2.1, -50.0], [-1.1, -0.5, -50.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.float64)
    assert torch.allclose(clip_cov.token_covariance(logp, ADV, mask)[:, :2], cov, atol=1e-12)


def test_clip_cov_selection_and_loss_by_hand():
    mask = torch.ones(2, 2)
    # band (1, 5): only (0,0) (Cov 1.7); r N = 2e-4 * 4 -> at least 1 token
    sel = clip_cov.clip_cov_select(torch.tensor(LOGP0, dtype=torch.float64), ADV, mask, 2e-4, 1.0, 5.0)
    assert sel.tolist() == [[True, False], [False, False]]
    # band (0, 5) holds (0,0) and (1,0); clip_ratio 0.25 -> 1 token, drawn at random among the two
    for seed in range(6):
        s = clip_cov.clip_cov_select(torch.tensor(LOGP0), ADV, mask, 0.25, 0.0, 5.0,
                                     generator=torch.Generator().manual_seed(seed))
        assert s.sum() == 1 and (s[0, 0] or s[1, 0])
    # loss at rho = 1 (eps = 1: no clipping), token-mean: l = -A except 0 on (0,0)
    #   l = [[0, -2], [2, 2]] -> 2 / 4 = 0.5 ; dl/dlogp = -A / 4 off I_clip: [[0, -0.5], [0.5, 0.5]]
    logp = leaf(LOGP0)
    loss, stats = clip_cov.clip_cov_loss(logp, logp.detach(), ADV, mask, sel)
    loss.backward()
    assert loss.item() == pytest.approx(0.5, abs=1e-12)
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.5], [0.5, 0.5]], dtype=torch.float64))
    assert stats["cov_detached_frac"] == pytest.approx(0.25)


def test_kl_cov_selection_and_loss_by_hand():
    mask = torch.ones(2, 2)
    # top max(1, floor(0.5 * 4)) = 2 tokens by Cov: (0,0) 1.7 and (1,0) 0.3
    sel = kl_cov.kl_cov_select(torch.tensor(LOGP0, dtype=torch.float64), ADV, mask, 0.5)
    assert sel.tolist() == [[True, False], [True, False]]
    assert kl_cov.kl_cov_select(torch.tensor(LOGP0), ADV, mask, 2e-3).tolist() == [[True, False], [False, False]]
    # pi_old = LOGP0, logp = LOGP0 + d with d = [[0.1, -0.2], [-0.3, 0]], beta = 1, token-mean:
    #   l = -A e^d + |d| [selected]
    #   (0,0) -2 e^0.1 + 0.1   (0,1) -2 e^-0.2   (1,0) 2 e^-0.3 + 0.3   (1,1) 2
    #   dl/dlogp = -A e^d + sign(d) [selected]:  -2 e^0.1 + 1, -2 e^-0.2, 2 e^-0.3 - 1, 2   (all / 4)
    d = [[0.1, -0.2], [-0.3, 0.0]]
    logp = leaf([[a + b for a, b in zip(r0, r1, strict=True)] for r0, r1 in zip(LOGP0, d, strict=True)])
    loss, _ = kl_cov.kl_cov_loss(logp, torch.tensor(LOGP0, dtype=torch.float64), ADV, mask, sel, kl_coef=1.0)
    loss.backward()
    e = math.exp
    want = (-2 * e(0.1) + 0.1 - 2 * e(-0.2) + 2 * e(-0.3) + 0.3 + 2) / 4  # = 0.00845827
    assert loss.item() == pytest.approx(want, abs=1e-12)
    g = torch.tensor([[-2 * e(0.1) + 1, -2 * e(-0.2)], [2 * e(-0.3) - 1, 2.0]], dtype=torch.float64) / 4
    assert torch.allclose(logp.grad, g, atol=1e-12)


def test_entropy_advantage_by_hand():
    # A = [1, -1, 0], H = [[0.5, 2], [0.5, 2], [1, 1]], alpha 0.4, kappa 2: psi = min(0.4 H, |A| / 2)
    #   row 0: min(0.2, 0.5) = 0.2, min(0.8, 0.5) = 0.5 -> A' = [1.2, 1.5]
    #   row 1: same psi -> A' = [-0.8, -0.5]  (a negative advantage stays negative)
    #   row 2: |A| = 0 -> psi = 0 -> A' = [0, 0]
    A = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    H = leaf([[0.5, 2.0], [0.5, 2.0], [1.0, 1.0]])
    shaped = entropy_advantage.shaped_advantages(A, H, 0.4, 2.0)
    assert torch.allclose(shaped, torch.tensor([[1.2, 1.5], [-0.8, -0.5], [0.0, 0.0]], dtype=torch.float64))
    # loss at rho = 1, seq-mean-token-mean: mean_i mean_t -A' = (-1.35 + 0.65 + 0) / 3 = -0.2333...
    # dl/dlogp = -A' / (2 tokens * 3 rows); no gradient reaches H
    logp = leaf([[-0.3, -1.0], [-0.2, -2.0], [-0.5, -0.1]])
    loss, _ = entropy_advantage.entropy_advantage_loss(logp, logp.detach(), H, A, torch.ones(3, 2), 0.4, 2.0)
    loss.backward()
    assert loss.item() == pytest.approx(-0.7 / 3, abs=1e-12)
    assert torch.allclose(logp.grad, -shaped.detach() / 6)
    assert H.grad is None


# ---------------------------------------------------------------------------------------- GRESO
def test_greso_rule_pieces():
    assert greso.group_kind([1.0] * 4) == "easy" and greso.group_kind([0.0] * 4) == "hard"
    assert greso.group_kind([1.0, 0.0, 1.0, 1.0]) is None
    s = None
    for kind, want in [("easy", ["easy", 1]), ("easy", ["easy", 2]), ("hard", ["hard", 1]), (None, None)]:
        s = greso.next_streak(s, kind)
        assert s == want
    assert greso.keep_probability(None, 0.5, 0.5) == 1.0
    assert greso.keep_probability(["easy", 3], 0.5, 0.9) == pytest.approx(0.125)  # 0.5^3
    assert greso.keep_probability(["hard", 2], 0.5, 0.3) == pytest.approx(0.09)  # 0.3^2
    assert greso.keep_probability(["easy", 10], 0.5, 0.5) == 0.01  # 0.5^10 < floor
    assert greso.adapt(0.5, 0.2, 0.25 / 3, 0.01, 0.05, 0.95) == pytest.approx(0.49)  # over target: skip more
    assert greso.adapt(0.5, 0.0, 0.25 / 3, 0.01, 0.05, 0.95) == pytest.approx(0.51)
    assert greso.adapt(0.05, 0.9, 0.1, 0.01, 0.05, 0.95) == 0.05  # bounded


class ScriptedTask:
    """Always offers the same two prompts "a", "b" (in that order)."""

    def prompts(self, n: int, rng: random.Random) -> list[Problem]:
        return [Problem(prompt=p, answer="1") for p in ("a", "b")][:n]


def test_greso_scripted_history_skip_and_resume():
    cfg = greso.Config(batch_size=2, group_size=2, max_rounds=1)  # 1 candidate prompt per step
    algo = greso.Algo(None, None, ScriptedTask(), cfg, seed=0)  # the rule needs no model
    a, b = ScriptedTask().prompts(2, random.Random())
    # history over 3 steps (G = 2): a solved by both samples 3 times; b mixed, then failed twice
    for ra, rb in [([1, 1], [1, 0]), ([1, 1], [0, 0]), ([1, 1], [0, 0])]:
        algo.observe([a, b], torch.tensor(ra + rb, dtype=torch.float), 2)
    assert algo.streaks == {"a": ["easy", 3], "b": ["hard", 2]}
    # each step: easy frac 1/2 >= 0.25/3 and hard frac (0, 1/2, 1/2) vs 0.25*2/3: p_easy 0.5 -> 0.47;
    # p_hard 0.5 -> 0.51 -> 0.50 -> 0.49
    assert algo.p_easy == pytest.approx(0.47) and algo.p_hard == pytest.approx(0.49)
    # prompt a is offered alone each step: kept with probability 0.47^3 = 0.1038
    kept = sum(algo.select_prompts(s)[1] == 0 for s in range(2000))  # skipped: a is still returned
    assert abs(kept / 2000 - 0.47**3) < 4 * math.sqrt(0.104 * 0.896 / 2000)  # binomial, 4 sigma
    # the state survives a JSON round trip exactly: same skips afterwards
    state = json.loads(json.dumps(algo.extra_state()))
    assert state["streaks"] == {"a": ["easy", 3], "b": ["hard", 2]}
    other = greso.Algo(None, None, ScriptedTask(), cfg, seed=0)
    other.load_extra_state(state)
    assert [algo.select_prompts(s) for s in range(50)] == [other.select_prompts(s) for s in range(50)]
    # a group with variance ends the streak
    algo.observe([a], torch.tensor([1.0, 0.0]), 2)
    assert "a" not in algo.streaks
    # 1 of 8 groups all failed: 1/8 < target_hard = 0.25 * 2/3, so p_hard rises (explore more)
    p_hard = algo.p_hard
    algo.observe([b] + [a] * 7, torch.tensor([0.0, 0.0] + [1.0, 0.0] * 7), 2)
    assert algo.p_hard == pytest.approx(p_hard + 0.01)


# ----------------------------------------------------------------------------------------- PODS
def test_pods_max_variance_matches_brute_force():
    rng = random.Random(0)
    cases = [[1, 1, 1, 0, 0, 0, 0, 0]] + [[rng.choice([0.0, 1.0]) for _ in range(rng.randint(2, 8))]
                                          for _ in range(30)]
    cases += [[round(rng.uniform(-1, 2), 2) for _ in range(rng.randint(2, 8))] for _ in range(30)]
    cases += [[rng.choice([0.0, 0.1, 1.0]) for _ in range(8)] for _ in range(20)]
    for r in cases:
        for m in range(1, len(r) + 1):
            got = pods.max_variance_subset(r, m)
            assert len(got) == m == len(set(got))
            best = max(torch.tensor([r[i] for i in s], dtype=torch.float64).var(unbiased=False).item()
                       for s in itertools.combinations(range(len(r)), m))
            var = torch.tensor([r[i] for i in got], dtype=torch.float64).var(unbiased=False).item()
            assert var == pytest.approx(best, abs=1e-12), (r, m, got)
    # 3 right, 5 wrong, keep 4: two of each (variance 0.25)
    sub = pods.max_variance_subset([1, 1, 1, 0, 0, 0, 0, 0], 4)
    assert sorted(x < 3 for x in sub) == [False, False, True, True]


# ------------------------------------------------------------------------------------------ SEC
def test_sec_bandit_on_scripted_sequence():
    q = sec.td0_update({}, {"a": 0.8}, 0.5)  # Q(a) = 0.5 * 0.8 + 0.5 * 0 = 0.4
    assert q == {"a": pytest.approx(0.4)}
    q = sec.td0_update(q, {"a": 0.2, "b": 1.0}, 0.5)  # Q(a) = 0.1 + 0.2 = 0.3, Q(b) = 0.5
    assert q == {"a": pytest.approx(0.3), "b": pytest.approx(0.5)}
    pi = sec.boltzmann(q, ["a", "b", "c"], 1.0)  # exp(0.3), exp(0.5), exp(0) normalised
    z = math.exp(0.3) + math.exp(0.5) + 1.0
    assert pi == pytest.approx([math.exp(0.3) / z, math.exp(0.5) / z, 1.0 / z])
    assert sec.boltzmann(q, ["a", "b"], 0.1)[1] == pytest.approx(1 / (1 + math.exp(-2.0)))
    # r(c) = mean |A| over the category's rollouts; G = 2: prompts x, y, x with |A| means 1, 0.5, 0
    r = sec.category_rewards(["x", "y", "x"], torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 0.0]), 2)
    assert r == {"x": pytest.approx(0.5), "y": pytest.approx(0.5)}


def test_sec_categories_curriculum_and_resume():
    algo = sec.Algo(None, None, Addition(), sec.Config(), seed=0)
    assert sec.difficulty(Problem("1+1=", "2", meta={"difficulty": 3})) == "difficulty=3"
    assert algo.category(Problem("1+1=", "2", meta={"level": "hard"})) == "level=hard"
    cats = {algo.category(p) for p in Addition().prompts(200, random.Random(1))}
    assert len(cats) == 2  # addition: sums with 2 vs 3 digits (size proxy 8 vs 9)
    lo, hi = sorted(cats)
    algo.q = {lo: -5.0, hi: 5.0}  # Boltzmann at tau = 1: the high-Q category gets ~all slots
    _, drawn = algo.select_prompts(0)
    assert drawn == [hi] * len(drawn)
    other = sec.Algo(None, None, Addition(), sec.Config(), seed=0)
    other.load_extra_state(json.loads(json.dumps(algo.extra_state())))
    assert [algo.select_prompts(s) for s in range(5)] == [other.select_prompts(s) for s in range(5)]


# --------------------------------------------------- gradient accumulation: micro-batches sum up
@pytest.mark.parametrize("method", METHODS)
def test_loss_is_invariant_to_micro_batching(method):
    """One collected batch on the warm base: the micro-batch losses (normalised by the whole
    batch's counts) sum to the full-batch loss, and their gradients to its gradient."""
    mod = module(method)
    seed_everything(0)
    model, tok = load_model(str(warm_start()))  # the warm base: rewards vary, advantages != 0
    algo = mod.Algo(model, tok, Addition(), mod.Config(batch_size=16, group_size=4, keep=2)
                    if method == "pods" else mod.Config(batch_size=16, group_size=4), seed=0)
    batch, _ = algo.collect(0)
    totals = {"rows": len(batch["mask"]), "tokens": batch["mask"].sum()}
    full = algo.loss(batch, totals)[0]
    g_full = flat_grad(model, full)
    parts, g_parts = 0.0, torch.zeros_like(g_full)
    for micro in split(batch, 3):
        loss = algo.loss(micro, totals)[0]
        parts, g_parts = parts + loss.item(), g_parts + flat_grad(model, loss)
    assert parts == pytest.approx(full.item(), rel=1e-5, abs=1e-6)
    assert g_full.abs().max() > 0
    assert (g_parts - g_full).abs().max().item() <= 1e-5 * g_full.abs().max().item() + 1e-8


# ------------------------------------------------------------------------------ runner smoke
@pytest.mark.parametrize("method", METHODS)
def test_two_steps_through_the_runner(method, tmp_path):
    from reference_impls import runner

    if method not in runner.METHODS:
        pytest.skip(f"{method} is not registered (scripts/set_impl.py)")
    r = runner.run(method, steps=2, out=tmp_path, progress=False)
    assert r.status == "finished" and len(r.history) == 2


# ------------------------------------------------------------------------------------ learning
LEARN_STEPS = 50
MARGIN = 0.015  # over the base's held-out mean reward (0.355 with seed 0)
LEARN_CFG: dict[str, dict[str, Any]] = {"pods": {"group_size": 8, "keep": 4}}  # 16 prompts x 8 sampled


@pytest.fixture(scope="module")
def base_reward() -> float:
    model, tok = load_model(str(warm_start()))
    torch.manual_seed(0)
    return mean_reward(model, tok, Addition().eval_sets["in_distribution"], 4)


def learned_reward(method: str, flip: bool) -> float:
    mod = module(method)
    seed_everything(0)
    model, tok = load_model(str(warm_start()))
    seed_everything(0)
    algo = mod.Algo(model, tok, Addition(), mod.Config(steps=LEARN_STEPS, **LEARN_CFG.get(method, {})), seed=0)
    if flip:  # the broken variant: gradient ascent on the method's own loss
        loss = algo.loss
        algo.loss = lambda micro, totals: (lambda out: (-out[0], out[1]))(loss(micro, totals))
    train(algo, algo.cfg, progress=False)
    torch.manual_seed(0)
    return mean_reward(model, tok, Addition().eval_sets["in_distribution"], 4)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_method_raises_reward_and_sign_flip_does_not(method, base_reward):
    """Asserts: after LEARN_STEPS steps (batch 64, defaults otherwise) the held-out mean reward
    (4 samples at T = 1, 200 problems) is >= base + MARGIN, and the sign-flipped loss stays below it."""
    good, broken = learned_reward(method, False), learned_reward(method, True)
    assert good >= base_reward + MARGIN, (good, base_reward)
    assert broken < base_reward + MARGIN, (broken, base_reward)
