"""Supervised fine-tuning (SFT): token-level negative log-likelihood of demonstrations.

    L_SFT(theta) = - 1/N sum_{i,t} m_{i,t} log pi_theta(y_{i,t} | x_i, y_{i,<t}),   N = sum_{i,t} m_{i,t}

Only completion tokens count (m = 0 on the prompt and padding); the mean is over all completion
tokens of the *whole* batch (global token mean), so gradient accumulation does not change it.
This is the SFT stage of InstructGPT (Ouyang et al., arXiv 2203.02155) on task demonstrations.
Defaults (lr 3e-3, 20 warmup steps, batch 64, AdamW, constant LR, clip 1.0) are ours, tuned for the tiny preset on addition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import sft_loss
from reference_impls.core.sampling import prompt_completion_batch
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"demonstrations"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = False  # SFT trains the raw model; it is also the warm-start recipe itself


@dataclass
class Config(TrainConfig):
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # demonstrations per step
    lr: float = 3e-3  # peak learning rate (ours, tiny preset)
    warmup_steps: int = 20  # linear LR warmup steps


# sft_loss(logp, mask): - sum(m log p) / sum(m), the equation above, in core/losses.py


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        demos = self.task.demonstrations(self.cfg.batch_size, step_rng(self.seed, step))
        batch = prompt_completion_batch(self.tok, [p for p, _ in demos], [c for _, c in demos],
                                        self.device)
        return batch, {}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        logp = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"])  # [b, T-1]
        return sft_loss(logp, micro["mask"], total_tokens=totals["tokens"]), {}
