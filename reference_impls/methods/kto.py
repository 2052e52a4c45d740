"""Kahneman-Tversky Optimisation, KTO (Ethayarajh et al., arXiv 2402.01306): preference learning
from unpaired completions, each labelled desirable or undesirable, with a prospect-theoretic value
relative to a KL reference point:
    r(x, y) = log pi(y|x) - log ref(y|x)                     (summed completion log-probs)
    z0 = max(0, KL estimate),  KL est. = mean_i [log pi(y'_i|x_i) - log ref(y'_i|x_i)]
         over MISMATCHED pairs (x_i, y'_i), y'_i = the completion of row i-1 (the batch's
         completions rotated by one, as TRL does); z0 is detached (no gradient)
    v(x, y) = lambda_D sigma(beta (r - z0))   if y is desirable
              lambda_U sigma(beta (z0 - r))   if y is undesirable
    L = E[lambda_y - v(x, y)]                                 (eq. 7 / eq. 8 of the paper)
i.e. per row lambda_D (1 - sigma(beta (r - z0))) or lambda_U (1 - sigma(beta (z0 - r))), averaged
over all rows of the batch (TRL's `losses.nanmean()`).
z0 is computed in `collect` from the whole batch (the policy has not moved yet at that point), so
micro-batching does not change it. The paper estimates z0 from the whole batch likewise; under
torchrun the rotation and the mean run over every rank's rows (TRL gathers z0 across processes),
so N processes compute one process's z0.
Defaults: beta = 0.1, lambda_D = lambda_U = 1 (paper and TRL); lr 3e-4, batch 32, 60 steps ours.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core import distributed
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.sampling import encode, pad_prompt_completion
from reference_impls.core.train import Batch, TrainConfig, step_rng
from reference_impls.methods.dpo import Algo as DPOAlgo
from reference_impls.methods.dpo import summed_logprobs

NEEDS = {"unpaired_labels"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps
    batch_size: int = 32  # labelled completions per step (about half desirable)
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    beta: float = 0.1  # inverse temperature of the value function (paper and TRL: 0.1)
    desirable_weight: float = 1.0  # lambda_D (paper and TRL: 1.0)
    undesirable_weight: float = 1.0  # lambda_U (paper and TRL: 1.0)


def kto_loss(pi_logps: Tensor, ref_logps: Tensor, labels: Tensor, kl: Tensor, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0, *,
             num_rows: int | None = None) -> tuple[Tensor, Tensor]:
    """pi_logps, ref_logps [B] summed completion log-probs; labels [B] bool (desirable); kl: the
    reference point z0 BEFORE clamping (scalar or [B], detached here). -> (loss, rewards [B])."""
    z0 = kl.detach().clamp(min=0)  # z0 = max(0, KL estimate)
    r = pi_logps - ref_logps  # [B] r(x, y)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))  # lambda_D - v  (y desirable)
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))  # lambda_U - v
    losses = torch.where(labels.bool(), desirable, undesirable)  # [B]
    n = losses.shape[0] if num_rows is None else num_rows
    return losses.sum() / n, beta * r.detach()


def completion_logps(model, b: Batch, prefix: str = "") -> Tensor:
    """Summed completion log-probs [B] of the batch's `{prefix}input_ids` rows."""
    logp = sequence_logprobs(model, b[f"{prefix}input_ids"], b[f"{prefix}attention_mask"])  # [B, T-1]
    return (logp * b[f"{prefix}mask"]).sum(-1)


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.ref = copy.deepcopy(model).eval().requires_grad_(False)  # frozen ref = pi_0
        self.device = next(model.parameters()).device

    def rows_batch(self, rows: list[tuple[str, str, bool]], before: str | None = None) -> Batch:
        """Matched rows (x_i, y_i) and mismatched KL rows (x_i, y_{i-1}), plus ref log-probs and
        the reference point `kl` (whole-batch mean of log pi - log ref on the KL rows, [B] copies).
        `before`: the completion of the row before the first (torchrun: the previous rank's last
        row; None: this batch's last row, the rotation of a whole batch)."""
        eos = [self.tok.eos_token_id]
        prompts = encode(self.tok, [p for p, _, _ in rows], prompt=True)
        comps = [c + eos for c in encode(self.tok, [c for _, c, _ in rows])]
        first = comps[-1:] if before is None else [encode(self.tok, [before])[0] + eos]
        kl_comps = first + comps[:-1]  # rotate by one: y'_i = y_{i-1}
        both = pad_prompt_completion(prompts + prompts, comps + kl_comps, self.tok.pad_token_id, self.device)
        B = len(rows)
        batch: Batch = {k: v[:B] for k, v in both.items()}
        batch.update({f"kl_{k}": v[B:] for k, v in both.items()})
        batch["labels"] = torch.tensor([y for _, _, y in rows], device=self.device)
        batch["ref_logps"] = completion_logps(self.ref, batch)  # [B]
        kl_rows = completion_logps(self.module, batch, "kl_") - completion_logps(self.ref, batch, "kl_")
        kl = distributed.all_sum(kl_rows.sum()) / distributed.all_sum(torch.tensor(float(B), device=self.device))
        batch["kl"] = kl.expand(B).clone()  # [B]: every rank's mean (TRL gathers it), on every row
        return batch

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        rows = self.task.unpaired(self.cfg.batch_size, step_rng(self.seed, step))  # torchrun: a share
        lasts = distributed.gather_objects(rows[-1][1])  # each rank's last completion
        batch = self.rows_batch(rows, lasts[distributed.rank() - 1])  # rank 0: the last rank's
        return batch, {"kl": batch["kl"][0].item(), "desirable_frac": batch["labels"].float().mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        pi = completion_logps(self.module, micro)  # [b]
        loss, rewards = kto_loss(pi, micro["ref_logps"], micro["labels"], micro["kl"], c.beta,
                                 c.desirable_weight, c.undesirable_weight, num_rows=totals["rows"])
        n, lab = totals["rows"], micro["labels"].bool()
        return loss, {"reward_desirable": (rewards[lab].sum() / n).item(),
                      "reward_undesirable": (rewards[~lab].sum() / n).item()}

    @torch.no_grad()
    def evaluate(self, n: int = 200) -> dict[str, float]:
        """On held-out ID problems paired with a wrong completion (task.wrong_completion):
        preference_accuracy         share with r(y_w) > r(y_l), r = beta log(pi/ref) (0 at the start: ties)
        policy_preference_accuracy  share with log pi(y_w) > log pi(y_l)"""
        rng = random.Random(999)
        probs = self.task.eval_sets["in_distribution"][:n]
        pairs = [(p.prompt, p.solution, self.task.wrong_completion(p, rng)) for p in probs]
        batch = DPOAlgo.pairs_batch(self, pairs)  # same fields (tok, ref, device) as DPO's Algo
        self.module.eval()
        pc, pr = summed_logprobs(self.module, batch)
        self.module.train()
        rc, rr = pc - batch["ref_chosen"], pr - batch["ref_rejected"]
        return {"preference_accuracy": (rc > rr).float().mean().item(),
                "policy_preference_accuracy": (pc > pr).float().mean().item()}
