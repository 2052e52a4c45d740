"""KL-Cov (Cui et al., The Entropy Mechanism of Reinforcement Learning for Reasoning Language
Models, arXiv 2505.22617; official code github.com/PRIME-RL/Entropy-Mechanism-of-RL,
verl/trainer/ppo/core_algos.py::compute_policy_loss_kl_cov).

Instead of detaching high-covariance tokens (Clip-Cov), KL-Cov puts a KL penalty on the top-k
fraction of tokens ranked by the log-prob / advantage covariance:
    Cov_{i,t} = (log pi_theta(y_{i,t}) - mean_{valid} log pi_theta) * (A_{i,t} - mean_{valid} A)
    I_KL     = the max(1, floor(k * N)) valid tokens with the largest Cov
    l_{i,t}  = -rho_{i,t} A_i + beta * |log pi_theta(y_{i,t}) - log pi_old(y_{i,t})| * [(i,t) in I_KL]
    L        = aggregate(l, mask)
The KL estimate is |log rho| (the code's `abs_kl`), and the surrogate is the *unclipped* rho A
(the code applies no PPO clip in kl_cov mode); beta is the `kl_coef` option (the `beta` option
is GroupConfig's separate k3 penalty to a reference model, 0 by default). At rho = 1 (the first update on a batch) the
penalty is 0 with zero gradient, so it acts from the second update on a batch onwards.
Defaults: k = 2e-3 (the code's k_percent = 0.2, in percent, of its Qwen2.5-7B recipe; the paper
uses 2e-3 for 7B and 2e-4 for 32B), beta = 1 (ppo_kl_coef), token-mean aggregation, no KL to a
reference: from the official code. updates_per_batch = 2 is ours: the recipe takes 8 optimizer
steps per rollout batch (mini-batches of 32 of 256 prompts); with one update the method would
equal plain policy gradient.
Where we differ from the code: it ranks the tokens of every loss call (each micro-batch, each
update) by the current policy's log-probs; we rank once per collected batch by pi_old's (the
same at the first update), so the selection does not depend on the micro-batch split.
Tiny-preset lr, steps and batch sizes are ours (rl_data.GroupConfig).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.losses import AggregationMode, aggregate
from reference_impls.core.rl_data import GroupAlgo, GroupConfig, add_ref_kl
from reference_impls.core.train import Batch
from reference_impls.methods.clip_cov import token_covariance

NEEDS = {"verifiable_reward"}
STARTS_FROM_BASE = True


@dataclass
class Config(GroupConfig):
    aggregation: AggregationMode = "token-mean"  # official recipes: loss_agg_mode token-mean
    updates_per_batch: int = 2  # optimizer steps per collected batch (ours; the penalty needs rho != 1)
    k_ratio: float = 2e-3  # k: fraction of completion tokens (largest covariance) that get the KL penalty
    kl_coef: float = 1.0  # the paper's beta: weight of |log pi - log pi_old| on those tokens (official ppo_kl_coef)


def kl_cov_select(logp: Tensor, adv: Tensor, mask: Tensor, k_ratio: float) -> Tensor:
    """Boolean [B, T]: the top max(1, floor(k N)) valid tokens by covariance (ties: torch.topk order)."""
    cov = token_covariance(logp.detach(), adv, mask).masked_fill(mask <= 0, -torch.inf)
    n_valid = int(mask.sum().item())
    sel = torch.zeros_like(mask, dtype=torch.bool)
    if n_valid == 0 or k_ratio <= 0:
        return sel
    n = max(1, int(n_valid * k_ratio))
    top = torch.topk(cov.flatten(), n).indices  # flat indices into [B * T]
    sel.view(-1)[top] = True
    return sel


def kl_cov_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, penalised: Tensor,
                kl_coef: float = 1.0, aggregation: AggregationMode = "token-mean",
                max_len: int | None = None, ref_logp: Tensor | None = None, beta: float = 0.0, *,
                total_tokens: float | Tensor | None = None, total_seqs: int | None = None,
                ) -> tuple[Tensor, dict[str, float]]:
    """logp, old_logp, mask, penalised [B, T]; advantages [B] -> (scalar loss, stats)."""
    A = advantages.unsqueeze(-1)  # [B, 1]
    log_ratio = logp - old_logp  # log rho [B, T]
    abs_kl = log_ratio.abs()  # |log pi - log pi_old|
    loss_tok = -A * torch.exp(log_ratio)  # -rho A (no clip)
    loss_tok = loss_tok + kl_coef * abs_kl * penalised.to(logp.dtype)  # + beta |log rho| on I_KL
    loss_tok = add_ref_kl(loss_tok, logp, ref_logp, beta)  # + beta_ref k3 if a reference is kept
    loss = aggregate(loss_tok, mask, aggregation, max_len, total_tokens=total_tokens,
                     total_seqs=total_seqs)
    tm = dict(total_tokens=total_tokens)
    return loss, {"abs_kl": aggregate(abs_kl.detach(), mask, "token-mean", **tm).item(),
                  "kl_penalised_frac": aggregate(penalised.float(), mask, "token-mean", **tm).item()}


class Algo(GroupAlgo):
    needs_old_logp = True  # pi_old log-probs: the KL anchor and the ranking

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        batch, log = super().collect(step)
        batch["penalised"] = kl_cov_select(batch["old_logp"], batch["advantages"], batch["mask"],
                                           self.cfg.k_ratio)
        return batch, log

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp = self._logp(self.module, micro)  # [n, T-1]
        return kl_cov_loss(logp, micro["old_logp"], micro["advantages"], micro["mask"],
                           micro["penalised"], c.kl_coef, c.aggregation, c.max_new_tokens,
                           micro.get("ref_logp"), c.beta, total_tokens=totals["tokens"], total_seqs=totals["rows"])
