"""Direct Preference Optimization (Rafailov et al., arXiv 2305.18290), with the IPO (Azar et al.,
arXiv 2310.12036) and hinge (SLiC-style) variants.

With summed completion log-probs and a frozen reference copy of the starting policy,
    h = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]
    sigmoid: L = -(1-ls) log sigma(beta h) - ls log sigma(-beta h)     (DPO; ls = label smoothing,
                                                                         conservative DPO)
    ipo:     L = (h - 1/(2 beta))^2                                     (IPO, Azar et al. eq. 17,
                                                                         on summed log-ratios)
    hinge:   L = max(0, 1 - beta h)
averaged over pairs. Implicit rewards r = beta (log pi - log ref), detached, for logging.
Each model scores a batch's chosen and rejected sequences in one forward over [chosen; rejected]
(padded to one width), as TRL does.
Defaults: beta = 0.1 (DPO paper and TRL); lr 3e-4, batch 32 pairs, 60 steps are ours for the tiny
preset (the paper uses 1e-6 on billion-parameter models).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.sampling import encode, pad_prompt_completion
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"preference_pairs"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps
    batch_size: int = 32  # preference pairs per step
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    beta: float = 0.1  # inverse temperature of the implicit reward (paper, TRL: 0.1)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"  # DPO | IPO | hinge (SLiC)
    label_smoothing: float = 0.0  # conservative DPO: assumed label-flip rate


def dpo_loss(pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float = 0.1, loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid",
             label_smoothing: float = 0.0, *, num_pairs: int | None = None,
             ) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs: summed completion log-probs [B]. Returns (loss, chosen_rewards [B], rejected_rewards [B])."""
    h = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)  # [B] log-ratio margin
    if loss_type == "sigmoid":
        # L = -(1-ls) log sigma(beta h) - ls log sigma(-beta h)
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2  # (h - 1/(2 beta))^2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)  # max(0, 1 - beta h)
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}")
    n = losses.shape[0] if num_pairs is None else num_pairs
    chosen_rewards = beta * (pi_chosen - ref_chosen).detach()  # [B]
    rejected_rewards = beta * (pi_rejected - ref_rejected).detach()  # [B]
    return losses.sum() / n, chosen_rewards, rejected_rewards


def summed_logprobs(model, batch: Batch) -> tuple[Tensor, Tensor]:
    """sum_t m_t log pi(y_t | x, y_<t) of the chosen and the rejected sequences, scored in one
    forward over [chosen; rejected] (both halves have the same width T).   -> ([B], [B])"""
    both = {k: torch.cat([batch[f"chosen_{k}"], batch[f"rejected_{k}"]])
            for k in ("input_ids", "attention_mask", "mask")}  # [2B, T], [2B, T], [2B, T-1]
    logp = sequence_logprobs(model, both["input_ids"], both["attention_mask"])  # [2B, T-1]
    chosen, rejected = (logp * both["mask"]).sum(-1).chunk(2)  # [B], [B]
    return chosen, rejected


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.ref = copy.deepcopy(model).eval().requires_grad_(False)  # frozen pi_ref = pi_0
        self.device = next(model.parameters()).device

    def pairs_batch(self, pairs: list[tuple[str, str, str]]) -> Batch:
        """chosen_* and rejected_* tensors of one common width, plus the reference's summed
        log-probs ref_chosen, ref_rejected [B]. Each prompt is tokenised once, for both halves."""
        B, eos = len(pairs), [self.tok.eos_token_id]
        prompts = encode(self.tok, [p for p, _, _ in pairs], prompt=True)  # [B] token lists
        completions = encode(self.tok, [c for _, c, _ in pairs] + [r for _, _, r in pairs])  # [2B]
        both = pad_prompt_completion(prompts + prompts, [c + eos for c in completions],
                                     self.tok.pad_token_id, self.device)  # [2B, T] = [chosen; rejected]
        batch: Batch = {}
        for k, v in both.items():
            batch[f"chosen_{k}"], batch[f"rejected_{k}"] = v[:B], v[B:]
        with torch.no_grad():
            batch["ref_chosen"], batch["ref_rejected"] = summed_logprobs(self.ref, batch)  # [B], [B]
        return batch

    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        return self.pairs_batch(self.task.preference_pairs(self.cfg.batch_size, step_rng(self.seed, step))), {}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        pi_chosen, pi_rejected = summed_logprobs(self.module, micro)  # [b], [b]: one forward
        loss, rc, rr = dpo_loss(pi_chosen, pi_rejected, micro["ref_chosen"], micro["ref_rejected"],
                                c.beta, c.loss_type, c.label_smoothing, num_pairs=totals["rows"])
        n = totals["rows"]
        return loss, {"reward_margin": ((rc - rr).sum() / n).item(),
                      "reward_accuracy": ((rc > rr).float().sum() / n).item()}

    @torch.no_grad()
    def evaluate(self, n: int = 200) -> dict[str, float]:
        """On held-out ID problems paired with wrong answers:
        preference_accuracy         share of pairs with r(y_w) > r(y_l), r = beta log(pi/ref), the
                                    implicit reward (TRL's rewards/accuracies; 0 at the start: ties)
        reward_margin               mean r(y_w) - r(y_l)
        policy_preference_accuracy  share with log pi(y_w) > log pi(y_l) (meaningful at the start)
        logp_margin                 mean log pi(y_w) - log pi(y_l)"""
        import random

        rng = random.Random(999)
        probs = self.task.eval_sets["in_distribution"][:n]
        batch = self.pairs_batch([(p.prompt, p.solution, self.task.wrong_completion(p, rng)) for p in probs])
        self.module.eval()
        pc, pr = summed_logprobs(self.module, batch)
        self.module.train()
        _, rc, rr = dpo_loss(pc, pr, batch["ref_chosen"], batch["ref_rejected"], self.cfg.beta)
        return {"preference_accuracy": (rc > rr).float().mean().item(),
                "reward_margin": (rc - rr).mean().item(),
                "policy_preference_accuracy": (pc > pr).float().mean().item(),
                "logp_margin": (pc - pr).mean().item()}
