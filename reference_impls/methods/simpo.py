"""Simple Preference Optimization, SimPO (Meng, Xia & Chen, arXiv 2405.14734): a reference-free
implicit reward, the length-normalised log-likelihood, and a target reward margin gamma:
    r(x, y) = beta/|y| log pi(y|x) = beta/|y| sum_t log pi(y_t | x, y_<t)
    L = -log sigma( r(x, y_w) - r(x, y_l) - gamma )                           (eq. 6 of the paper)
averaged over pairs; |y| counts the completion tokens (EOS included). No reference model.
Conventions: as TRL's CPOTrainer(loss_type="simpo", cpo_alpha=0), which writes the same loss as
-log sigma(beta (avg_w - avg_l - gamma/beta)); `label_smoothing` (TRL's, default 0) is offered.
Defaults: beta = 2.0 and gamma = 1.0 (gamma/beta = 0.5) sit in the range of the authors' recipes
(beta 2-2.5, gamma/beta about 0.5-0.8 as reported from the official repository; not re-checked
here). TRL's CPOConfig defaults differ (beta 0.1, simpo_gamma 0.5). lr 3e-4, batch 32, 60 steps ours.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from reference_impls.core.train import Batch, TrainConfig, step_rng
from reference_impls.methods.orpo import length_averaged, pair_logprobs, pair_tensors

NEEDS = {"preference_pairs"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps
    batch_size: int = 32  # preference pairs per step
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    beta: float = 2.0  # reward scale beta (authors' recipes: 2.0-2.5)
    gamma: float = 1.0  # target reward margin gamma (gamma/beta = 0.5)
    label_smoothing: float = 0.0  # conservative variant, as TRL's CPO (0: the paper's loss)


def simpo_loss(avg_chosen: Tensor, avg_rejected: Tensor, beta: float = 2.0, gamma: float = 1.0,
               label_smoothing: float = 0.0, *, num_pairs: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """avg_* [B]: length-normalised completion log-probs 1/|y| log pi(y|x).
    -> (loss, chosen rewards [B], rejected rewards [B]) with r = beta * avg (detached)."""
    z = beta * (avg_chosen - avg_rejected) - gamma  # r_w - r_l - gamma   [B]
    ls = label_smoothing
    losses = -(1 - ls) * F.logsigmoid(z) - ls * F.logsigmoid(-z)  # -log sigma(r_w - r_l - gamma)  (eq. 6)
    n = losses.shape[0] if num_pairs is None else num_pairs
    return losses.sum() / n, beta * avg_chosen.detach(), beta * avg_rejected.detach()


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        pairs = self.task.preference_pairs(self.cfg.batch_size, step_rng(self.seed, step))
        return pair_tensors(self.tok, pairs, self.device), {}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        avg_c, avg_r = length_averaged(*pair_logprobs(self.module, micro))  # [b], [b]
        loss, rc, rr = simpo_loss(avg_c, avg_r, c.beta, c.gamma, c.label_smoothing, num_pairs=totals["rows"])
        n = totals["rows"]
        return loss, {"reward_margin": ((rc - rr).sum() / n).item(),
                      "reward_accuracy": ((rc > rr).float().sum() / n).item()}

    @torch.no_grad()
    def evaluate(self, n: int = 200) -> dict[str, float]:
        """Held-out ID problems paired with task.wrong_completion:
        preference_accuracy  share with r(y_w) > r(y_l), r = beta/|y| log pi (SimPO's own reward;
                             meaningful at the start, there is no reference)
        reward_margin        mean r(y_w) - r(y_l)"""
        rng = random.Random(999)
        probs = self.task.eval_sets["in_distribution"][:n]
        b = pair_tensors(self.tok, [(p.prompt, p.solution, self.task.wrong_completion(p, rng)) for p in probs], self.device)
        self.module.eval()
        avg_c, avg_r = length_averaged(*pair_logprobs(self.module, b))
        self.module.train()
        margin = self.cfg.beta * (avg_c - avg_r)
        return {"preference_accuracy": (margin > 0).float().mean().item(), "reward_margin": margin.mean().item()}
