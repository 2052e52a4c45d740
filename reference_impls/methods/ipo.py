"""Identity Preference Optimisation, IPO (Azar et al., arXiv 2310.12036): DPO's pairs and frozen
reference, but a squared loss that regresses the log-ratio margin onto a finite target instead of
pushing it to infinity (the paper's fix for DPO's over-fitting on deterministic preferences):
    h = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]
    L = (h - 1/(2 tau))^2                                     (eq. 17 of the paper; tau = beta here)
averaged over pairs.
Conventions: `length_normalize = False` (default) takes summed completion log-probs, as the paper's
sequence-level log-ratios; `True` divides each sequence's log-ratio by its completion length
(EOS included), as TRL's DPOTrainer loss_type="ipo" does (TRL made that choice after consulting the
IPO authors). Both are offered; the TRL parity test uses `True`.
Defaults: tau = 0.1 (TRL's beta default; the paper sweeps tau); lr 3e-4, batch 32 pairs, 60 steps
are ours for the tiny preset, as DPO's.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from reference_impls.core.train import TrainConfig
from reference_impls.methods import dpo
from reference_impls.methods.dpo import summed_logprobs

NEEDS = {"preference_pairs"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps
    batch_size: int = 32  # preference pairs per step
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    beta: float = 0.1  # tau of the paper: the margin target is 1/(2 tau)
    length_normalize: bool = False  # divide each log-ratio by its completion length (TRL's ipo)


def ipo_loss(pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float = 0.1, len_chosen: Tensor | None = None, len_rejected: Tensor | None = None,
             *, num_pairs: int | None = None) -> tuple[Tensor, Tensor]:
    """Inputs [B]: summed completion log-probs (and, to length-normalise, completion lengths [B]).
    Returns (loss, margin h [B] detached)."""
    rc, rr = pi_chosen - ref_chosen, pi_rejected - ref_rejected  # [B] log-ratios
    if len_chosen is not None:
        rc, rr = rc / len_chosen, rr / len_rejected  # TRL: per-token mean log-ratio
    h = rc - rr  # [B]
    losses = (h - 1 / (2 * beta)) ** 2  # (h - 1/(2 tau))^2   (eq. 17)
    n = losses.shape[0] if num_pairs is None else num_pairs
    return losses.sum() / n, h.detach()


class Algo(dpo.Algo):
    """DPO's data path (pairs_batch, one forward over [chosen; rejected]) and held-out `evaluate`
    (implicit reward beta log(pi/ref)); IPO's loss."""

    def loss(self, micro, totals) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        pc, pr = summed_logprobs(self.module, micro)  # [b], [b]
        lens = ((micro["chosen_mask"].sum(-1), micro["rejected_mask"].sum(-1))
                if c.length_normalize else (None, None))
        loss, h = ipo_loss(pc, pr, micro["ref_chosen"], micro["ref_rejected"], c.beta, *lens,
                           num_pairs=totals["rows"])
        n = totals["rows"]
        return loss, {"margin": (h.sum() / n).item(), "reward_accuracy": ((h > 0).float().sum() / n).item()}
