"""Single-stage SFT<->RL hybrids (LUFFY, SRFT, NFT, HPT, CHORD, ReLIFT): losses against numbers
worked out by hand from each paper's equation (as the official code computes it), the per-prompt
switching / buffering / grouping machinery, and learning on a WEAK warm-start base, where the
start model mostly fails and expert data should help."""

import dataclasses
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

import reference_impls.testing  # noqa: F401  (HF offline, 1 torch thread)
from reference_impls import runner
from reference_impls.core.evaluate import accuracy
from reference_impls.core.model import load_model
from reference_impls.core.train import seed_everything, train
from reference_impls.methods import chord, hpt, luffy, nft, relift, srft
from reference_impls.tasks.addition import Addition
from reference_impls.tasks.base_model import RECIPE, warm_start

T = torch.tensor
L = math.log
HYBRIDS = {"luffy": luffy, "srft": srft, "nft": nft, "hpt": hpt, "chord": chord, "relift": relift}


def base_model(steps: int | None = None):
    path = warm_start() if steps is None else warm_start(recipe=dataclasses.replace(RECIPE, steps=steps))
    return load_model(str(path))


def algo(mod, task=None, steps=None, **cfg):
    seed_everything(0)
    model, tok = base_model(steps)
    return mod.Algo(model, tok, task or Addition(), mod.Config(**cfg), seed=0)


# Every rollout FAILS with a 1-token budget (sums of two 2-digit numbers have 2-3 digits), while
# the expert solution (teacher-forced, not sampled) stays correct.
FAIL = dict(max_new_tokens=1)


class AlwaysRight(Addition):
    """Addition whose reward is 1 for any completion: every rollout succeeds."""

    def reward(self, problem, completion):
        return 1.0


# ------------------------------------------------------------------------------------ LUFFY


def test_luffy_loss_hand():
    # row 0 sampled, row 1 expert (forced); 2 tokens each, all in the mask; w = 1/4 per row.
    p_on, p_off = T([[0.5, 0.25]]), T([[0.9, 0.1]])
    logp = torch.cat([p_on, p_off]).log().requires_grad_()
    old = torch.cat([T([[0.4, 0.25]]).log(), p_off.log()])  # rho = 1.25, 1 on row 0
    A, forced, mask, w = T([-0.5, 2.0]), T([[0.0, 0.0], [1.0, 1.0]]), torch.ones(2, 2), T([0.25, 0.25])
    loss, _ = luffy.luffy_loss(logp, old, A, mask, forced, w, gamma=0.1)
    # on: -rho A = 0.625, 0.5; off: -A p/(p+0.1) = -2*0.9/1.0 = -1.8, -2*0.1/0.2 = -1.0
    assert loss.item() == pytest.approx(0.25 * (0.625 + 0.5 - 1.8 - 1.0), abs=1e-6)
    loss.backward()
    # d/dlogp of -A f(p) = -A gamma p / (p + gamma)^2: -2*0.1*0.9/1 = -0.18, -2*0.1*0.1/0.04 = -0.5
    assert logp.grad[1].tolist() == pytest.approx([0.25 * -0.18, 0.25 * -0.5], abs=1e-6)
    assert logp.grad[0].tolist() == pytest.approx([0.25 * 0.625, 0.25 * 0.5], abs=1e-6)  # -rho A
    # paper variant: clip on-policy ratio 1.25 -> 1.2 only where it binds (A < 0: max(0.625, 0.6))
    clipped, _ = luffy.luffy_loss(logp, old, -A, mask, forced, w, clip=True)
    # on with A = +0.5: -min(1.25*0.5, 1.2*0.5) = -0.6, -0.5; off: +1.8, +1.0
    assert clipped.item() == pytest.approx(0.25 * (-0.6 - 0.5 + 1.8 + 1.0), abs=1e-6)


def test_luffy_groups_mix_expert_and_share_advantage():
    a = algo(luffy, batch_size=16, group_size=4, **FAIL)  # 3 sampled + 1 expert per prompt
    batch, log = a.collect(0)
    is_expert = batch["forced"].amax(-1)
    assert is_expert.tolist() == [0, 0, 0, 1] * 4
    # all sampled rows fail, the expert succeeds: A over the whole group = r - 1/4
    assert batch["advantages"].tolist() == pytest.approx([-0.25, -0.25, -0.25, 0.75] * 4)
    assert log["reward"] == 0.0  # reward logged over the sampled rows only
    assert torch.equal(batch["forced"] * batch["mask"], batch["forced"])  # forced tokens are scored
    loss, _ = a.loss(batch, {"rows": 16, "tokens": batch["mask"].sum()})
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------------ SRFT


def test_srft_loss_hand():
    # rows: demo, correct rollout, wrong rollout; 1 token each (mask 1); entropies H = 0.5, 1, 2
    # (the group advantage `dadv` is set on every row but must act on the demo row only)
    p, scale = T([[0.8], [0.5], [0.25]]), torch.ones((), requires_grad=True)
    logp, ent = p.log().requires_grad_(), T([[0.5], [1.0], [2.0]]) * scale
    is_demo, ok, dadv = T([1.0, 0, 0]), T([0.0, 1, 0]), T([0.6, 0.3, -0.2])
    w_sft, w_rl, mask = T([1.0, 0, 0]), T([1 / 3] * 3), torch.ones(3, 1)
    loss, st = srft.srft_loss(logp, ent, mask, is_demo, ok, dadv, w_sft, w_rl)
    sft = 0.5 * math.exp(-0.5) * -L(0.8)  # w_SFT NLL on the demo
    demo_rl = -0.6 * 0.8 / 0.9  # -A f(p), f = p/(p+0.1)
    pos = -0.1 * math.exp(1.0) * L(0.5)  # -0.1 e^H log p (correct)
    neg = L(0.25)  # -(-1) log p (wrong)
    assert st["sft_loss"] == pytest.approx(sft, abs=1e-6)
    assert loss.item() == pytest.approx(sft + (demo_rl + pos + neg) / 3, abs=1e-6)
    loss.backward()  # entropy weights are detached: grads are the weights themselves
    assert scale.grad is None or scale.grad.item() == 0.0
    assert logp.grad[:, 0].tolist() == pytest.approx(
        [-0.5 * math.exp(-0.5) - 0.6 * 0.1 * 0.8 / 0.81 / 3, -0.1 * math.exp(1) / 3, 1 / 3], abs=1e-6)
    two_term, _ = srft.srft_loss(logp, ent, mask, is_demo, ok, dadv, w_sft, w_rl, demo_rl=False)
    assert two_term.item() == pytest.approx(sft + (pos + neg) / 3, abs=1e-6)


# ------------------------------------------------------------------------------------ NFT


def test_nft_loss_hand():
    # one token per row; r_q = 0.5 (weight 1 - r = 0.5); rows: correct R = 2, wrong R = 0.5,
    # wrong R = 1.5 (proxy (1 - 0.75)/0.5 = 0.5 < eps = 1: value clamped to 1, gradient kept)
    logp = T([[0.0], [0.0], [0.0]], requires_grad=True)
    old = T([[-L(2.0)], [L(2.0)], [-L(1.5)]])
    ok, rate, mask, w = T([1.0, 0, 0]), T([0.5] * 3), torch.ones(3, 1), T([1.0] * 3)
    loss, _ = nft.nft_loss(logp, old, ok, rate, mask, w)
    # correct: -log 2; wrong R=.5: -log((1 - .25)/.5) = -log 1.5; wrong R=1.5: -log(max(.5, 1)) = 0
    assert loss.item() == pytest.approx(0.5 * (-L(2) - L(1.5) + 0.0), abs=1e-6)
    loss.backward()
    # d/dlogp: correct -1; wrong: -(1/proxy_value) * d proxy/dlogp = (r R / (1 - r)) / value
    #   R = .5: (.25/.5)/1.5 = 1/3;  R = 1.5 (clamped value 1): (.75/.5)/1 = 1.5;  all x 0.5
    assert logp.grad[:, 0].tolist() == pytest.approx([-0.5, 0.5 / 3, 0.75], abs=1e-6)
    # r_q clamped to [0.02, 0.98]: an all-wrong group behaves as r = 0.02 (R = 1: gradient 0.02 * 0.98/0.98)
    lp = T([[0.0]], requires_grad=True)
    nft.nft_loss(lp, lp.detach(), T([0.0]), T([0.0]), torch.ones(1, 1), T([1.0]))[0].backward()
    assert lp.grad.item() == pytest.approx(0.02, abs=1e-6)


def test_nft_on_policy_gradient_is_dr_grpo():
    # R = 1: gradient per token = -(1 - r) on correct, +r on wrong = -(reward - r_q)
    rate = T([0.25] * 4)
    ok = T([1.0, 0, 0, 0])
    logp = torch.zeros(4, 1, requires_grad=True)
    nft.nft_loss(logp, logp.detach(), ok, rate, torch.ones(4, 1), torch.ones(4))[0].backward()
    assert logp.grad[:, 0].tolist() == pytest.approx((-(ok - rate)).tolist(), abs=1e-6)


# ------------------------------------------------------------------------------------ HPT


def test_hpt_loss_hand():
    logp = T([[L(0.5)], [L(0.25)], [L(0.8)]], requires_grad=True)
    A, is_sft, mask = T([1.0, -1.0, 0.0]), T([0.0, 0, 1]), torch.ones(3, 1)
    w_rl, w_sft = T([0.5, 0.5, 0.0]), T([0.0, 0.0, 1.0])
    loss, st = hpt.hpt_loss(logp, logp.detach(), A, is_sft, mask, w_rl, w_sft)
    assert st["sft_loss"] == pytest.approx(-L(0.8), abs=1e-6)
    assert loss.item() == pytest.approx(0.5 * (-1 + 1) - L(0.8), abs=1e-6)
    loss.backward()
    assert logp.grad[:, 0].tolist() == pytest.approx([-0.5, 0.5, -1.0], abs=1e-6)


@pytest.mark.parametrize(("fail", "sft_rows"), [(True, 4), (False, 0)])
def test_hpt_switch_per_prompt(fail, sft_rows):
    # all rollouts fail (gate 0): the rollouts are dropped, one expert row per prompt is SFT'd;
    # all succeed: plain GRPO rows only
    a = algo(hpt, batch_size=16, group_size=4, **FAIL) if fail else \
        algo(hpt, task=AlwaysRight(), batch_size=16, group_size=4)
    batch, log = a.collect(0)
    assert int(batch["is_sft"].sum()) == sft_rows and len(batch["is_sft"]) == (4 if sft_rows else 16)
    assert log["sft_prompts"] == sft_rows / 4
    if sft_rows:
        assert torch.equal(batch["forced"], batch["mask"])  # expert solutions, teacher-forced
        assert batch["w_sft"].sum() * batch["mask"].sum(-1).mean() == pytest.approx(1.0)
    assert torch.isfinite(a.loss(batch, {"rows": len(batch["is_sft"]), "tokens": batch["mask"].sum()})[0])


# ------------------------------------------------------------------------------------ CHORD


@pytest.mark.parametrize(("step", "mu"), [(0, 0.0), (10, 0.25), (20, 0.5), (40, 0.26), (60, 0.02), (99, 0.02)])
def test_chord_mu_schedule(step, mu):
    # warmup 20: linear 0 -> 0.5; decay 40: 0.02 + 0.48 (1 + cos(pi s/40)) / 2; then 0.02
    assert chord.mu_at(step, chord.Config()) == pytest.approx(mu, abs=1e-9)


def test_chord_loss_hand():
    # rows: rollout (A = 1, rho = 1), expert token p = 0.8 (phi = 0.16), expert token p = 0.5 (phi = .25)
    logp = T([[L(0.5)], [L(0.8)], [L(0.5)]], requires_grad=True)
    A, is_exp, mask = T([1.0, 0, 0]), T([0.0, 1, 1]), torch.ones(3, 1)
    w_rl, w_sft = T([1.0, 0, 0]), T([0.0, 0.5, 0.5])
    loss, st = chord.chord_loss(logp, logp.detach(), A, is_exp, mask, w_rl, w_sft, mu=0.3)
    sft = 0.5 * (-0.16 * L(0.8) - 0.25 * L(0.5))
    assert st["sft_loss"] == pytest.approx(sft, abs=1e-6)
    assert loss.item() == pytest.approx(0.7 * -1.0 + 0.3 * sft, abs=1e-6)
    loss.backward()  # phi is a stop-gradient weight
    assert logp.grad[:, 0].tolist() == pytest.approx([-0.7, -0.3 * 0.5 * 0.16, -0.3 * 0.5 * 0.25], abs=1e-6)
    plain, _ = chord.chord_loss(logp, logp.detach(), A, is_exp, mask, w_rl, w_sft, mu=0.3, phi=False)
    assert plain.item() == pytest.approx(-0.7 + 0.3 * 0.5 * (-L(0.8) - L(0.5)), abs=1e-6)
    # PPO clip binds: rho = 1.5, A = 1 -> -min(1.5, 1.2) = -1.2
    clipped, _ = chord.chord_loss(logp, logp.detach() - L(1.5), A, is_exp, mask, w_rl, w_sft, mu=0.0)
    assert clipped.item() == pytest.approx(-1.2, abs=1e-6)


# ------------------------------------------------------------------------------------ ReLIFT


def test_relift_loss_hand():
    logp, ent = T([[L(0.5)], [L(0.25)]], requires_grad=True), T([[1.0], [2.0]])
    w, mask = T([0.5, 0.5]), torch.ones(2, 1)
    sft = relift.relift_loss(logp, ent, mask, T([0.0, 0]), T([1.0, 1]), w, 0.0, 0.01)
    assert sft.item() == pytest.approx(0.5 * (-L(0.5) - L(0.25)) - 0.01 * 1.5, abs=1e-6)
    rl = relift.relift_loss(logp, ent, mask, T([1.0, -1.0]), T([0.0, 0]), w, 0.0, 0.01)
    assert rl.item() == pytest.approx(0.0, abs=1e-6)
    rl.backward()
    assert logp.grad[:, 0].tolist() == pytest.approx([-0.5, 0.5], abs=1e-6)  # -A grad log pi


def test_relift_buffers_failed_prompts_and_resumes_exactly(tmp_path):
    # every rollout fails: 4 prompts per GRPO step enter the buffer; buffer_size 8 -> steps 0, 1
    # GRPO, step 2 SFT on the 8 buffered prompts (newest first), step 3 GRPO again
    cfg = dict(batch_size=16, group_size=4, buffer_size=8, steps=4, **FAIL)
    a = algo(relift, **cfg)
    b0, _ = a.collect(0)
    first = [p for p, _ in a.buffer]
    a.collect(1)
    assert len(a.buffer) == 8 and [p for p, _ in a.buffer[4:]] == first
    b2, log = a.collect(2)
    assert log["sft_step"] == 1.0 and a.buffer == [] and b2["is_sft"].sum() == 8
    assert torch.equal(b2["forced"], b2["mask"]) and b0["is_sft"].sum() == 0
    # a run interrupted after step 2 (buffer non-empty) and resumed equals an uninterrupted one
    whole = algo(relift, **cfg)
    train(whole, whole.cfg, progress=False)
    part = algo(relift, **cfg)
    ck = tmp_path / "ck.safetensors"
    train(part, part.cfg, checkpoint=ck, stop_after=2, progress=False)
    assert len(part.buffer) == 8
    resumed = algo(relift, **cfg)
    train(resumed, resumed.cfg, resume=ck, checkpoint=ck, progress=False)
    for x, y in zip(whole.module.parameters(), resumed.module.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# ------------------------------------------------------------------------------------ all


@pytest.mark.parametrize("name", sorted(HYBRIDS))
def test_micro_batching_does_not_change_the_loss(name):
    a = algo(HYBRIDS[name], batch_size=16, group_size=4)
    batch, _ = a.collect(0)
    totals = {"rows": len(batch["mask"]), "tokens": batch["mask"].sum()}
    whole = a.loss(batch, totals)[0].item()
    parts = sum(a.loss({k: v[i : i + 5] for k, v in batch.items()}, totals)[0].item()
                for i in range(0, totals["rows"], 5))
    assert parts == pytest.approx(whole, abs=1e-5)


@pytest.mark.parametrize("name", sorted(HYBRIDS))
def test_two_step_smoke_run(name, tmp_path):
    if name not in runner.METHODS:
        pytest.skip(f"{name} not registered yet")
    r = runner.run(name, steps=2, out=tmp_path, progress=False)
    assert r.status == "finished"


# ------------------------------------------------------------------------------------ learning

WEAK = 250  # warm-start SFT steps of the WEAK base: greedy exact match 14 % on the ID split
#             (the standard 400-step base: 62.5 %), measured on 2 CPU cores, seed 0


def learn(mod, base_steps, steps):
    a = algo(mod, steps=base_steps)
    task = a.task
    before = accuracy(a.module, a.tok, task, task.eval_sets["in_distribution"])
    train(a, a.cfg if a.cfg.steps == steps else dataclasses.replace(a.cfg, steps=steps), progress=False)
    return before, accuracy(a.module, a.tok, task, task.eval_sets["in_distribution"])


# (method, base SFT steps (None = standard base), training steps). Measured, seed 0, lr 3e-4:
#   weak base 14 %  -> 40 steps: luffy 18 %, hpt 18 %, chord 23 %, relift 16.5 % (grpo 16 %);
#   standard 62.5 % -> 40 steps: srft 71 %, nft 72.5 %.
# Every sign-flipped loss (the whole loss negated) ends at 0 % from the same start.
# SRFT's -1 weight on every wrong rollout outweighs its SFT term on the weak base (14 % -> 8.5 %
# after 40 steps) and NFT uses no expert data (14 % -> 12.5 %), so they are tested on the standard base.
@pytest.mark.slow
@pytest.mark.parametrize(("name", "base_steps", "margin"), [
    ("luffy", WEAK, 0.02), ("hpt", WEAK, 0.02), ("chord", WEAK, 0.02), ("relift", WEAK, 0.02),
    ("srft", None, 0.05), ("nft", None, 0.05)])
def test_hybrid_raises_exact_match(name, base_steps, margin):
    before, after = learn(HYBRIDS[name], base_steps, 40)
    if base_steps == WEAK:
        assert before <= 0.2  # the start mostly fails
    assert after >= before + margin  # a sign-flipped loss reaches 0 %
