"""Unit tests of the pure functions of reference_impls against hand-computed values."""

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from reference_impls.core.logprobs import position_ids, token_logprobs
from reference_impls.core.losses import aggregate, group_advantages, kl_estimate
from reference_impls.methods.dpo import dpo_loss
from reference_impls.methods.grpo import grpo_loss
from reference_impls.methods.ppo import gae, ppo_policy_loss, ppo_value_loss, whiten
from reference_impls.methods.sft import sft_loss

T = torch.tensor


def test_token_logprobs_hand():
    logits = torch.zeros(1, 3, 2)
    logits[0, 0] = T([0.0, 2 * math.log(3)])  # /2 -> [0, ln 3] -> p(1) = 3/4
    lp = token_logprobs(logits, T([[0, 1, 0]]), temperature=2.0)
    assert lp.shape == (1, 2)
    assert lp[0, 0].item() == pytest.approx(math.log(0.75), abs=1e-6)
    assert lp[0, 1].item() == pytest.approx(math.log(0.5), abs=1e-6)  # uniform over 2


def test_token_logprobs_matches_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits, ids = torch.randn(2, 5, 7, generator=g), torch.randint(0, 7, (2, 5), generator=g)
    ref = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, ids), ref)


def test_position_ids_skip_left_padding():
    assert position_ids(T([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


L = T([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize(("mode", "expected"), [("token-mean", 7 / 3), ("seq-mean-token-mean", 2.75),
                                                ("seq-mean-token-sum", 3.5), ("constant", 7 / 8)])
def test_aggregate_hand(mode, expected):
    assert aggregate(L, M, mode, constant=4).item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "constant"])
def test_aggregate_split_sums_to_whole(mode):
    whole = aggregate(L, M, mode, constant=4)
    parts = sum(aggregate(L[i : i + 1], M[i : i + 1], mode, constant=4, total_tokens=M.sum(),
                          total_seqs=2) for i in range(2))
    assert parts.item() == pytest.approx(whole.item())


def test_aggregate_constant_needs_constant():
    with pytest.raises(ValueError):
        aggregate(L, M, "constant")


def test_kl_estimators_hand():
    logp, ref = T([[math.log(0.5)]]), T([[math.log(0.25)]])  # log r = ref - logp = ln 0.5
    lr = math.log(0.5)
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(-lr)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * lr**2)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 - lr - 1)
    for k in ("k1", "k2", "k3"):
        assert kl_estimate(logp, logp, k).item() == 0.0


def test_kl_k3_nonnegative_and_unbiased():
    g = torch.Generator().manual_seed(0)
    p, q = torch.softmax(torch.randn(5, generator=g), 0), torch.softmax(torch.randn(5, generator=g), 0)
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    k3 = kl_estimate(p.log()[x], q.log()[x], "k3")
    assert (k3 >= 0).all()
    assert k3.mean().item() == pytest.approx((p * (p / q).log()).sum().item(), rel=0.03)


R = T([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_group_advantages_std_hand():
    a = group_advantages(R, 4, "std", eps=1e-4)  # unbiased std of [1,0,0,1] = sqrt(1/3)
    s = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    torch.testing.assert_close(a, T([s, -s, -s, s, 0, 0, 0, 0]))


def test_group_advantages_none_and_loo_hand():
    torch.testing.assert_close(group_advantages(R, 4, "none"), T([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    t = 2 / 3  # 1 - (0+0+1)/3 ; 0 - (1+0+1)/3
    torch.testing.assert_close(group_advantages(R, 4, "loo"), T([t, -t, -t, t, 0, 0, 0, 0]))


def test_sft_loss_hand():
    assert sft_loss(T([[-1.0, -2.0, -3.0]]), T([[0.0, 1.0, 1.0]])).item() == pytest.approx(2.5)


@pytest.mark.parametrize(("loss_type", "ls", "expected"), [
    ("sigmoid", 0.0, -math.log(1 / (1 + math.exp(-1)))),
    ("sigmoid", 0.1, 0.9 * -math.log(1 / (1 + math.exp(-1))) + 0.1 * -math.log(1 / (1 + math.exp(1)))),
    ("ipo", 0.0, 1.0),  # (h - 1/(2 beta))^2 = (2 - 1)^2
    ("hinge", 0.0, 0.0),  # max(0, 1 - 0.5 * 2)
])
def test_dpo_loss_hand(loss_type, ls, expected):
    # h = (pi_c - ref_c) - (pi_r - ref_r) = 1 - (-1) = 2; beta = 0.5
    loss, rc, rr = dpo_loss(T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), 0.5, loss_type, ls)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert rc.item() == pytest.approx(0.5) and rr.item() == pytest.approx(-0.5)


def test_dpo_gradient_raises_chosen():
    pc, pr = T([-2.0], requires_grad=True), T([-2.0], requires_grad=True)
    loss, _, _ = dpo_loss(pc, pr, T([-2.0]), T([-2.0]))
    loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descent raises log pi(chosen), lowers rejected


@pytest.mark.parametrize(("ratio", "adv", "eps_high", "expected"), [
    (1.5, 1.0, 0.2, -1.2),  # clipped above at 1 + eps_high
    (1.5, 1.0, 0.28, -1.28),  # clip-higher
    (0.5, -1.0, 0.2, 0.8),  # clipped below at 1 - eps_low
    (1.5, -1.0, 0.2, 1.5),  # pessimistic branch: not clipped
    (1.1, 1.0, 0.2, -1.1),  # inside the trust region
])
def test_grpo_loss_clipping_hand(ratio, adv, eps_high, expected):
    logp = T([[math.log(ratio)]])
    loss, stats = grpo_loss(logp, T([[0.0]]), T([adv]), T([[1.0]]), eps_low=0.2, eps_high=eps_high,
                            aggregation="token-mean")
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["clip_frac"] == (1.0 if expected in (-1.2, -1.28, 0.8) else 0.0)


def test_grpo_loss_kl_term_and_gradient_sign():
    logp = T([[math.log(0.5)]], requires_grad=True)
    ref = T([[math.log(0.25)]])
    loss, stats = grpo_loss(logp, logp.detach(), T([0.0]), T([[1.0]]), ref, beta=0.1)
    k3 = 0.5 - math.log(0.5) - 1
    assert loss.item() == pytest.approx(0.1 * k3) and stats["kl"] == pytest.approx(k3)
    logp2 = T([[-1.0]], requires_grad=True)
    grpo_loss(logp2, logp2.detach(), T([1.0]), T([[1.0]]))[0].backward()
    assert logp2.grad.item() < 0  # positive advantage: descent raises log pi


def test_gae_hand():
    adv, ret = gae(T([[0.0, 0.0, 1.0]]), T([[0.5, 0.5, 0.5]]), T([[1.0, 1.0, 1.0]]), gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, T([[0.125, 0.25, 0.5]]))
    torch.testing.assert_close(ret, T([[0.625, 0.75, 1.0]]))


def test_gae_respects_mask_and_gamma():
    # the last position is padding: its reward 9 must not leak back
    adv, ret = gae(T([[0.0, 1.0, 9.0]]), T([[0.5, 0.5, 0.5]]), T([[1.0, 1.0, 0.0]]), gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, T([[0.25, 0.5, 0.0]]))
    torch.testing.assert_close(ret, T([[0.75, 1.0, 0.0]]))
    # gamma = 0.5, lam = 1: A_0 = r0 + .5 r1 + .25 r2 - V0 ; V = 0
    adv, _ = gae(T([[1.0, 2.0, 4.0]]), torch.zeros(1, 3), torch.ones(1, 3), gamma=0.5, lam=1.0)
    torch.testing.assert_close(adv, T([[3.0, 4.0, 4.0]]))


def test_ppo_losses_hand():
    one = T([[1.0]])
    assert ppo_policy_loss(T([[math.log(1.5)]]), T([[0.0]]), one, one).item() == pytest.approx(-1.2)
    assert ppo_policy_loss(T([[math.log(0.5)]]), T([[0.0]]), -one, one).item() == pytest.approx(0.8)
    # clipped value is worse: V=1, V_old=0 -> clip 0.2; R=2: max(1, 3.24)/2
    assert ppo_value_loss(one, T([[0.0]]), T([[2.0]]), one).item() == pytest.approx(1.62)
    assert ppo_value_loss(one, T([[0.9]]), T([[0.0]]), one).item() == pytest.approx(0.5)


def test_whiten_masked():
    x, m = T([[1.0, 3.0, 100.0]]), T([[1.0, 1.0, 0.0]])
    torch.testing.assert_close(whiten(x, m), T([[-1.0, 1.0, 0.0]]), atol=1e-5, rtol=0)
