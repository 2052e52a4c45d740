"""Entropy bonus (entropy regularisation of the policy gradient; Mnih et al., A3C, arXiv 1602.01783),
on the GRPO objective as LLM RL uses it.

A3C adds beta * grad H(pi(.|s_t)) to the policy gradient (its eq. for the actor update); for an
LLM the state is the prefix q, o_<t and the entropy is that of the next-token distribution:
    H_{i,t} = -sum_v pi_theta(v | q, o_{i,<t}) log pi_theta(v | q, o_{i,<t})
    L = L_GRPO - alpha * (1 / sum_it m_it) sum_it m_it H_{i,t}
L_GRPO is grpo_loss (clipped ratio, group advantages, `aggregation`); the entropy term is always
the token mean over all completion tokens of the batch, whatever the aggregation of L_GRPO, as
TRL 1.16's GRPOTrainer does with `entropy_coef` (L = L_policy - coef * H). The entropy is of
softmax(z / temperature), the distribution that is sampled, and it is differentiated.
Defaults: alpha = 0.01 is A3C's beta (Atari); TRL's default entropy_coef is 0 (off). The GRPO part
follows rl_data.GroupConfig (G = 8, eps = 0.2, no KL, lr 3e-4, 100 steps: ours for the tiny preset).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from reference_impls.core.losses import AggregationMode, aggregate, grpo_loss
from reference_impls.core.rl_data import GroupAlgo, GroupConfig
from reference_impls.core.train import Batch

NEEDS = {"verifiable_reward"}
STARTS_FROM_BASE = True


@dataclass
class Config(GroupConfig):
    entropy_coef: float = 0.01  # alpha: weight of the mean token entropy subtracted from the loss (A3C: 0.01)


def entropy_bonus_loss(logp: Tensor, old_logp: Tensor, entropy: Tensor, advantages: Tensor,
                       mask: Tensor, entropy_coef: float, ref_logp: Tensor | None = None,
                       eps_low: float = 0.2, eps_high: float = 0.2, beta: float = 0.0,
                       aggregation: AggregationMode = "seq-mean-token-mean",
                       max_len: int | None = None, *, total_tokens: float | Tensor | None = None,
                       total_seqs: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """logp, old_logp, entropy, mask, ref_logp [B, T]; advantages [B] -> (scalar loss, stats)."""
    pg, stats = grpo_loss(logp, old_logp, advantages, mask, ref_logp, eps_low, eps_high, beta,
                          aggregation, max_len, total_tokens=total_tokens, total_seqs=total_seqs)
    h = aggregate(entropy, mask, "token-mean", total_tokens=total_tokens)  # mean_t H_t over the batch
    loss = pg - entropy_coef * h  # L = L_GRPO - alpha H
    return loss, {**stats, "entropy": h.item(), "pg_loss": pg.item()}


class Algo(GroupAlgo):
    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, ent = self._logp(self.module, micro, entropy=True)  # [n, T-1] each
        old = micro.get("old_logp", logp.detach())
        return entropy_bonus_loss(logp, old, ent, micro["advantages"], micro["mask"], c.entropy_coef,
                                  micro.get("ref_logp"), c.eps_low, c.eps_high, c.beta,
                                  c.aggregation, c.max_new_tokens, total_tokens=totals["tokens"],
                                  total_seqs=totals["rows"])
