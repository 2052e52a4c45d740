"""Dynamic Fine-Tuning (DFT; Wu et al., "On the Generalization of SFT: A Reinforcement Learning
Perspective with Reward Rectification", arXiv 2508.05629): SFT whose gradient equals a policy
gradient with the implicit reward 1{y = y*} / pi_theta(y*), rectified by multiplying each token's
loss by its own stop-gradient probability:

    L_DFT(theta) = - E_{(x, y*)} sum_t sg(pi_theta(y*_t | x, y*_<t)) log pi_theta(y*_t | x, y*_<t)   (eq. 8-9)

Conventions: per-token log-probs; the weighted losses are averaged over all completion tokens of
the whole batch (global token mean), as TRL 1.16 `SFTTrainer(loss_type="dft")` does (sum / number
of label tokens) and as our SFT does, so DFT = SFT with a per-token weight. The equation's
per-sequence sum (averaged over sequences) differs from this only in scale per batch.
Defaults (lr 3e-3, 20 warmup steps, batch 64, starting from the raw model like SFT) are ours, copied
from methods/sft.py for the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import aggregate
from reference_impls.methods.sft import Algo as SFTAlgo
from reference_impls.methods.sft import Config as SFTConfig

NEEDS = {"demonstrations"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = False  # an SFT replacement: trains the raw model, like sft.py


@dataclass
class Config(SFTConfig):
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # demonstrations per step
    lr: float = 3e-3  # peak learning rate (ours, as sft.py)
    warmup_steps: int = 20  # linear warmup steps (ours, as sft.py)


def dft_loss(logp: Tensor, mask: Tensor, *, total_tokens: float | Tensor | None = None
             ) -> tuple[Tensor, dict[str, float]]:
    """- sum(m sg(p) log p) / sum(m): logp [B, T], mask [B, T] (completion tokens) -> (scalar, stats)."""
    weight = logp.detach().exp()  # sg(pi_theta(y*_t | ...))   [B, T]
    loss = -aggregate(weight * logp, mask, "token-mean", total_tokens=total_tokens)  # eq. 8
    return loss, {"mean_weight": aggregate(weight, mask, "token-mean", total_tokens=total_tokens).item()}


class Algo(SFTAlgo):
    """SFT's data (demonstrations of the task, a batch per step); DFT's loss."""

    def loss(self, micro, totals) -> tuple[Tensor, dict[str, float]]:
        logp = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"])  # [b, T-1]
        return dft_loss(logp, micro["mask"], total_tokens=totals["tokens"])

