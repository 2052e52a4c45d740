"""PPO against hand-computed numbers (TRL 1.16 has no PPO trainer to compare with).

Every expected number below is worked out in the comments beside it. The cases are chosen to be
the ones that a wrong implementation gets wrong: discounting with gamma < 1 and lambda < 1, a
masked tail whose critic values must NOT be bootstrapped from, a global token mean (not a mean
of per-sequence means), and clipping active on both sides of the ratio / value trust region.
"""

from __future__ import annotations

import math

import pytest
import torch  # noqa: E402

from reference_impls.methods.ppo import gae, ppo_policy_loss, ppo_value_loss


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def close(actual: torch.Tensor, expected: list[list[float]] | torch.Tensor, mask: torch.Tensor) -> None:
    """Compare on the valid (mask = 1) positions only: what a masked slot holds is not specified."""
    expected = expected if isinstance(expected, torch.Tensor) else t(expected)
    m = mask.bool()
    torch.testing.assert_close(actual[m], expected[m], rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ GAE
# delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t        (V after the last valid token is 0)
# A_t     = delta_t + gamma * lam * m_{t+1} * A_{t+1}     returns_t = A_t + V_t


def test_gae_gamma_and_lambda_below_one() -> None:
    rewards = t([[0.0, 0.0, 1.0]])
    values = t([[0.5, 0.6, 0.7]])
    mask = t([[1, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)  # gamma * lam = 0.72
    # delta_2 = 1 + 0.9*0   - 0.7 = 0.3          A_2 = 0.3
    # delta_1 = 0 + 0.9*0.7 - 0.6 = 0.03         A_1 = 0.03 + 0.72*0.3   = 0.246
    # delta_0 = 0 + 0.9*0.6 - 0.5 = 0.04         A_0 = 0.04 + 0.72*0.246 = 0.21712
    close(adv, [[0.21712, 0.246, 0.3]], mask)
    # returns = A + V = [0.21712+0.5, 0.246+0.6, 0.3+0.7]
    close(ret, [[0.71712, 0.846, 1.0]], mask)


def test_gae_masked_tail_does_not_bootstrap_and_rows_are_independent() -> None:
    rewards = t([[0.0, 2.0, 0.0, 0.0],
                 [0.0, 0.0, 0.0, 1.0]])  # fmt: skip
    values = t([[1.0, 0.5, 9.0, 9.0],  # 9.0: critic output on padding, must be ignored
                [0.0, 0.0, 0.0, 0.0]])  # fmt: skip
    mask = t([[1, 1, 0, 0],
              [1, 1, 1, 1]])  # fmt: skip
    adv, ret = gae(rewards, values, mask, gamma=0.5, lam=1.0)
    # row 0 ends at t=1:  delta_1 = 2 + 0.5*0 - 0.5 = 1.5   (NOT 2 + 0.5*9 - 0.5 = 6)
    #                     delta_0 = 0 + 0.5*0.5 - 1.0 = -0.75
    #                     A_1 = 1.5,  A_0 = -0.75 + 0.5*1*1.5 = 0.0
    #                     returns = A + V = [1.0, 2.0] = the discounted returns (lam = 1)
    # row 1, V = 0: A_t = discounted return = 0.5^(3-t): [0.125, 0.25, 0.5, 1.0]
    close(adv, [[0.0, 1.5, 0, 0], [0.125, 0.25, 0.5, 1.0]], mask)
    close(ret, [[1.0, 2.0, 0, 0], [0.125, 0.25, 0.5, 1.0]], mask)


def test_gae_lambda_zero_is_one_step_td() -> None:
    rewards = t([[0.1, -0.2, 0.3]])
    values = t([[1.0, 2.0, 3.0]])
    mask = t([[1, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=0.5, lam=0.0)
    # A_t = delta_t = r_t + 0.5 * V_{t+1} - V_t:
    #   A_0 = 0.1 + 0.5*2 - 1 = 0.1;  A_1 = -0.2 + 0.5*3 - 2 = -0.7;  A_2 = 0.3 + 0 - 3 = -2.7
    close(adv, [[0.1, -0.7, -2.7]], mask)
    close(ret, [[1.1, 1.3, 0.3]], mask)  # A + V


def test_gae_default_gamma_one_matches_brute_force() -> None:
    """Defaults (gamma = 1, lam = 0.95) against the closed form A_t = sum_l (gamma lam)^l delta_{t+l}."""
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    lengths = [6, 4, 1]
    mask = (torch.arange(6)[None] < torch.tensor(lengths)[:, None]).float()
    adv, ret = gae(rewards, values, mask)
    expected = torch.zeros(3, 6)
    for i, n in enumerate(lengths):
        v_next = torch.cat([values[i, 1:n], torch.zeros(1)])  # V after the end is 0
        delta = rewards[i, :n] + v_next - values[i, :n]
        for s in range(n):
            expected[i, s] = sum(0.95**k * delta[s + k] for k in range(n - s))
    close(adv, expected, mask)
    close(ret, expected + values, mask)


# ------------------------------------------------------------------------------- policy loss
# L = token-mean over valid tokens of -min(r A, clip(r, 1 - eps, 1 + eps) A),  r = exp(logp - old)


def test_ppo_policy_loss_clips_both_sides_with_global_token_mean() -> None:
    ln = math.log
    old = torch.zeros(2, 3)
    # row 0 has one valid token then a masked tail (r = 3, A = 5: must be ignored)
    logp = torch.tensor([[ln(1.5), ln(3.0), ln(3.0)],
                         [ln(0.5), ln(1.5), ln(0.5)]], requires_grad=True)  # fmt: skip
    adv = t([[1.0, 5.0, 5.0],
             [-1.0, -2.0, 2.0]])  # fmt: skip
    mask = t([[1, 0, 0],
              [1, 1, 1]])  # fmt: skip
    loss = ppo_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    # token (r, A): -min(r A, clip(r) A)
    #   (1.5, +1): min(1.5, 1.2)   = 1.2  -> -1.2   clipped above (grad 0)
    #   (0.5, -1): min(-0.5, -0.8) = -0.8 -> 0.8    clipped below (grad 0)
    #   (1.5, -2): min(-3.0, -2.4) = -3.0 -> 3.0    unclipped: the pessimistic branch
    #   (0.5, +2): min(1.0, 1.6)   = 1.0  -> -1.0   unclipped
    # token mean over the 4 valid tokens: (-1.2 + 0.8 + 3.0 - 1.0) / 4 = 0.4
    # (a mean of per-sequence means would give (-1.2 + 2.8/3) / 2 = -0.1333: not this)
    assert loss.item() == pytest.approx(0.4, abs=1e-6)
    loss.backward()
    # d/d logp of -r A / 4 = -r A / 4 on unclipped tokens, 0 on clipped and masked ones:
    #   (1.5, -2): 3.0 / 4 = 0.75;  (0.5, +2): -1.0 / 4 = -0.25
    torch.testing.assert_close(logp.grad, t([[0, 0, 0], [0, 0.75, -0.25]]), rtol=1e-6, atol=1e-6)


def test_ppo_policy_loss_on_policy_value_and_gradient() -> None:
    """r = 1: loss = -mean(A) over valid tokens, d loss / d logp = -A / N (the policy gradient)."""
    logp = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    adv = t([[0.5, -1.5, 7.0]])
    mask = t([[1, 1, 0]])
    loss = ppo_policy_loss(logp, logp.detach(), adv, mask, clip_eps=0.1)
    assert loss.item() == pytest.approx(0.5, abs=1e-6)  # -(0.5 - 1.5) / 2
    loss.backward()
    torch.testing.assert_close(logp.grad, t([[-0.25, 0.75, 0.0]]), rtol=1e-6, atol=1e-6)  # -A / 2


# -------------------------------------------------------------------------------- value loss
# L_V = token-mean of 0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)


def test_ppo_value_loss_clips_both_sides() -> None:
    values = torch.tensor([[1.0, 0.0, 1.0, 0.6, 10.0]], requires_grad=True)
    old_values = t([[0.5, 0.5, 0.5, 0.5, 0.0]])
    returns = t([[1.0, 0.0, 0.0, 0.2, -10.0]])
    mask = t([[1, 1, 1, 1, 0]])  # the last token is padding
    loss = ppo_value_loss(values, old_values, returns, mask, clip_value=0.2)
    # V, V_old, R -> clip(V) in [V_old - 0.2, V_old + 0.2]; 0.5 * max(unclipped, clipped):
    #   1.0, 0.5, 1.0 -> 0.7 (above): max(0, 0.09)    = 0.09 -> 0.045  clipped term wins, grad 0
    #   0.0, 0.5, 0.0 -> 0.3 (below): max(0, 0.09)    = 0.09 -> 0.045  clipped term wins, grad 0
    #   1.0, 0.5, 0.0 -> 0.7 (above): max(1.0, 0.49)  = 1.0  -> 0.5    unclipped wins
    #   0.6, 0.5, 0.2 -> 0.6 (inside): max(0.16, 0.16) = 0.16 -> 0.08
    # token mean over 4 valid: (0.045 + 0.045 + 0.5 + 0.08) / 4 = 0.1675
    assert loss.item() == pytest.approx(0.1675, abs=1e-6)
    loss.backward()
    # d/dV of 0.5 (V - R)^2 / 4 = (V - R) / 4 where the unclipped term is live:
    #   third: (1.0 - 0.0) / 4 = 0.25;  fourth: (0.6 - 0.2) / 4 = 0.1;  others 0
    torch.testing.assert_close(values.grad, t([[0, 0, 0.25, 0.1, 0]]), rtol=1e-6, atol=1e-6)


def test_ppo_value_loss_is_token_mean_across_rows() -> None:
    values = t([[2.0, 0.0], [1.0, 1.0]])
    returns = t([[0.0, 0.0], [0.0, 0.0]])
    mask = t([[1, 0], [1, 1]])
    # no clipping (V_old = V): 0.5 * (V - R)^2 = [2.0, -, 0.5, 0.5]; token mean = 3.0 / 3 = 1.0
    # (a mean of per-row means would be (2.0 + 0.5) / 2 = 1.25)
    loss = ppo_value_loss(values, values.clone(), returns, mask, clip_value=0.2)
    assert loss.item() == pytest.approx(1.0, abs=1e-6)
