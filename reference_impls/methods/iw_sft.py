"""Importance-weighted SFT (iw-SFT; Qin & Springenberg, "Supervised Fine Tuning on Curated Data is
Reinforcement Learning (and can be improved)", arXiv 2507.12856). SFT on curated (good) data maximises
a lower bound of the RL objective; re-weighting each demonstration by an importance weight between
the current policy and the policy the data came from tightens it:

    w_i = clip(exp(T * mean_t[log pi_theta(y_it | ...) - log pi_ref(y_it | ...)]), 0, w_max)   (stop-gradient)
    L   = - sum_{i,t} m_it sg(w_i) log pi_theta(y_it | x_i, y_i<t) / sum_{i,t} m_it

Conventions follow the official code (github.com/emmyqin/iw_sft, bounding_trainers.py, `IwSFTLoss`
with `sum_over_time=True`): the log-ratio is the per-sequence MEAN over its completion tokens, one
weight per sequence, temperature T = 1 and w_max = 16 (the defaults here), and the weighted NLL is
divided by the number of completion tokens of the whole batch (global token mean). pi_ref is a frozen
copy of the model the stage starts from (the brief's choice; the code takes any given ref model), so
w = 1 and iw-SFT = SFT at step 0. The code's per-token variant (`sum_over_time=False`, weights
clipped to [0.2, 1.8]) is not implemented. lr, steps, batch sizes are ours (as sft.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import aggregate
from reference_impls.methods.sft import Algo as SFTAlgo
from reference_impls.methods.sft import Config as SFTConfig

NEEDS = {"demonstrations"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = False  # an SFT replacement: trains the raw model, like sft.py (ref = that start)


@dataclass
class Config(SFTConfig):
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # demonstrations per step
    lr: float = 3e-3  # peak learning rate (ours, as sft.py)
    warmup_steps: int = 20  # linear warmup steps (ours, as sft.py)
    temperature: float = 1.0  # T in w = exp(T * mean log-ratio) (official code: 1.0)
    w_max: float = 16.0  # upper clip of the importance weight (official code: 16)


def iw_sft_loss(logp: Tensor, ref_logp: Tensor, mask: Tensor, temperature: float = 1.0,
                w_max: float = 16.0, *, total_tokens: float | Tensor | None = None
                ) -> tuple[Tensor, dict[str, float]]:
    """logp, ref_logp, mask [B, T] -> (scalar loss, stats). One weight per sequence."""
    m = mask.to(logp.dtype)
    with torch.no_grad():
        ratio = ((logp - ref_logp) * m).sum(-1) / m.sum(-1).clamp(min=1)  # mean_t log pi/pi_ref  [B]
        w = torch.clamp(torch.exp(temperature * ratio), 0.0, w_max)  # clip(exp(T * .), 0, w_max)  [B]
    loss = -aggregate(w.unsqueeze(-1) * logp, mask, "token-mean", total_tokens=total_tokens)
    n = m.sum() if total_tokens is None else total_tokens  # token-weighted stat, additive
    return loss, {"mean_weight": ((w.unsqueeze(-1) * m).sum() / n).item()}


class Algo(SFTAlgo):
    """SFT's data; the importance-weighted loss against a frozen copy of the start model."""

    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        super().__init__(model, tok, task, cfg, seed)
        self.ref = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def collect(self, step: int):
        batch, log = super().collect(step)
        batch["ref_logp"] = sequence_logprobs(self.ref, batch["input_ids"], batch["attention_mask"])
        return batch, log

    def loss(self, micro, totals) -> tuple[Tensor, dict[str, float]]:
        logp = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"])  # [b, T-1]
        return iw_sft_loss(logp, micro["ref_logp"], micro["mask"], self.cfg.temperature,
                           self.cfg.w_max, total_tokens=totals["tokens"])
