"""Entropy-based advantage shaping (Cheng et al., Reasoning with Exploration: An Entropy
Perspective, arXiv 2506.14758), on GRPO.

Each token's advantage gets a bounded, gradient-free bonus from the entropy of the policy there:
    H_{i,t}   = -sum_v pi_theta(v | q, o_{i,<t}) log pi_theta(v | q, o_{i,<t})     (detached)
    psi_{i,t} = min(alpha * H_{i,t}, |A_i| / kappa)
    A^shaped_{i,t} = A_i + psi_{i,t}
    L = aggregate(-min(rho A^shaped, clip(rho, 1 - eps_low, 1 + eps_high) A^shaped), mask)
The clip at |A_i| / kappa (kappa > 1) keeps the bonus from flipping the sign of a negative
advantage or dominating a positive one, and a token of a zero-advantage group gets no bonus.
The entropy carries no gradient (the method is not an entropy regulariser): it only rescales
the policy-gradient weights, favouring uncertain (exploratory) tokens of good answers and
softening the penalty on those of bad answers. H is computed in the same forward pass as the
log-probs, i.e. under pi_theta (= pi_old at the first update on a batch).
Defaults alpha = 0.4, kappa = 2 are the paper's (as we read it; not re-checked against the text
here, the paper's code was not available to us). The GRPO part follows rl_data.GroupConfig
(G = 8, eps = 0.2, seq-mean-token-mean, no KL; lr 3e-4, 100 steps: ours for the tiny preset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.diagnostics import clip_stats
from reference_impls.core.losses import AggregationMode, aggregate
from reference_impls.core.rl_data import GroupAlgo, GroupConfig, add_ref_kl, token_pg_loss
from reference_impls.core.train import Batch

NEEDS = {"verifiable_reward"}
STARTS_FROM_BASE = True


@dataclass
class Config(GroupConfig):
    alpha: float = 0.4  # scale of the entropy bonus alpha * H (paper: 0.4)
    kappa: float = 2.0  # the bonus is clipped at |A| / kappa, kappa > 1 (paper: 2)


def shaped_advantages(advantages: Tensor, entropy: Tensor, alpha: float, kappa: float) -> Tensor:
    """A_i + min(alpha H_{i,t}, |A_i| / kappa), H detached.   advantages [B], entropy [B, T] -> [B, T]"""
    A = advantages.unsqueeze(-1)  # [B, 1]
    psi = torch.minimum(alpha * entropy.detach(), A.abs() / kappa)  # psi(H) [B, T]
    return A + psi


def entropy_advantage_loss(logp: Tensor, old_logp: Tensor, entropy: Tensor, advantages: Tensor,
                           mask: Tensor, alpha: float = 0.4, kappa: float = 2.0,
                           eps_low: float = 0.2, eps_high: float = 0.2,
                           aggregation: AggregationMode = "seq-mean-token-mean",
                           max_len: int | None = None, ref_logp: Tensor | None = None,
                           beta: float = 0.0, *, total_tokens: float | Tensor | None = None,
                           total_seqs: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """logp, old_logp, entropy, mask [B, T]; advantages [B] -> (scalar loss, stats)."""
    adv = shaped_advantages(advantages, entropy, alpha, kappa)  # [B, T]
    loss_tok, clipped = token_pg_loss(logp, old_logp, adv, eps_low, eps_high)
    loss_tok = add_ref_kl(loss_tok, logp, ref_logp, beta)  # + beta k3 if a reference is kept
    loss = aggregate(loss_tok, mask, aggregation, max_len, total_tokens=total_tokens,
                     total_seqs=total_seqs)
    tm = dict(total_tokens=total_tokens)
    bonus = (adv - advantages.unsqueeze(-1)).detach()
    return loss, {"entropy": aggregate(entropy.detach(), mask, "token-mean", **tm).item(),
                  "entropy_bonus": aggregate(bonus, mask, "token-mean", **tm).item(),
                  "clip_frac": aggregate(clipped.float(), mask, "token-mean", **tm).item(),
                  **clip_stats(torch.exp(logp - old_logp).detach(), adv, mask, 1 - eps_low, 1 + eps_high,
                               total_tokens)}


class Algo(GroupAlgo):
    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, ent = self._logp(self.module, micro, entropy=True)  # [n, T-1] each
        old = micro.get("old_logp", logp.detach())
        return entropy_advantage_loss(logp, old, ent, micro["advantages"], micro["mask"], c.alpha,
                                      c.kappa, c.eps_low, c.eps_high, c.aggregation,
                                      c.max_new_tokens, micro.get("ref_logp"), c.beta,
                                      total_tokens=totals["tokens"],
                                      total_seqs=totals["rows"])
