"""Online DPO / OAIF (Guo et al., "Direct Language Model Alignment from Online AI Feedback",
arXiv 2402.04792): DPO on pairs that the CURRENT policy samples, labelled online by a judge.
Each step, for every prompt x: sample y_1, y_2 ~ pi_theta(.|x) (temperature T), score both with
the task's reward (the judge; a learned reward model plugs in through the task's reward), the
better one is y_w, then
    h = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]
    L = -log sigma(beta h)                                    (DPO's loss, eq. 7 of arXiv 2305.18290)
on summed completion log-probs, reference = the frozen starting policy.
Ties (equal rewards, frequent with 0/1 rewards): `ties = "skip"` (default, ours) drops the pair
(it carries no preference) and averages over the untied pairs of the whole batch; `ties = "first"`
keeps it with y_1 as chosen and averages over all pairs, as TRL's OnlineDPOTrainer does
(`first_half >= second_half`). A batch whose pairs all tie gives loss 0 (no update but AdamW's).
Defaults: beta = 0.1 (TRL's OnlineDPOConfig); T = 1; lr 3e-4, 32 prompts x 2 samples, 60 steps ours.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.sampling import sample
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward"}  # signals asked of the task (tasks/base.py): the judge
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps
    batch_size: int = 32  # prompts per step (two samples each)
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    beta: float = 0.1  # inverse temperature of the implicit reward (TRL: 0.1)
    ties: Literal["skip", "first"] = "skip"  # equal rewards: drop the pair, or keep y_1 as chosen (TRL)
    temperature: float = 1.0  # sampling temperature
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)


def online_dpo_loss(pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
                    weight: Tensor, beta: float = 0.1, *, num_pairs: float | Tensor | None = None,
                    ) -> tuple[Tensor, Tensor]:
    """[B] summed log-probs of chosen/rejected under pi and ref; weight [B] (0 for a skipped tie);
    num_pairs: the normaliser (whole-batch count of weighted pairs). -> (loss, margin h [B])."""
    h = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)  # [B]
    losses = -F.logsigmoid(beta * h) * weight  # -log sigma(beta h)
    n = weight.sum() if num_pairs is None else num_pairs
    return losses.sum() / max(float(n), 1.0), h.detach()


def order_pairs(r1: Tensor, r2: Tensor, ties: str) -> tuple[Tensor, Tensor]:
    """(first_is_chosen [B] bool, weight [B] float) from the rewards of sample 1 and sample 2."""
    first = r1 >= r2  # TRL: mask = first_half >= second_half
    weight = torch.ones_like(r1) if ties == "first" else (r1 != r2).float()
    return first, weight


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.ref = copy.deepcopy(model).eval().requires_grad_(False)  # frozen ref = pi_0

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size, step_rng(self.seed, step))
        B = len(problems)
        ro = sample(self.module, self.tok, [p.prompt for p in problems] * 2, c.max_new_tokens, c.temperature)
        rewards = torch.tensor([self.task.reward(p, o) for p, o in zip(problems * 2, ro.completions, strict=True)])
        first, weight = order_pairs(rewards[:B], rewards[B:], c.ties)
        idx = torch.arange(B)
        ci, ri = torch.where(first, idx, idx + B), torch.where(first, idx + B, idx)  # chosen / rejected rows
        rows = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "mask": ro.mask}
        batch: Batch = {}
        for k, v in rows.items():  # both halves share the rollout's width
            batch[f"chosen_{k}"], batch[f"rejected_{k}"] = v[ci.to(v.device)], v[ri.to(v.device)]
        dev = ro.mask.device
        batch["ref_chosen"], batch["ref_rejected"] = self.summed(self.ref, batch)
        batch["weight"] = weight.to(dev)
        batch["n_pairs"] = weight.sum().expand(B).clone().to(dev)  # whole-batch normaliser, per row
        return batch, {"reward": rewards.mean().item(), "tie_frac": (rewards[:B] == rewards[B:]).float().mean().item(),
                       "completion_len": ro.mask.sum(-1).mean().item()}

    def summed(self, model, b: Batch) -> tuple[Tensor, Tensor]:
        """Summed completion log-probs of chosen and rejected rows, one forward.   -> [B], [B]"""
        both = {k: torch.cat([b[f"chosen_{k}"], b[f"rejected_{k}"]]) for k in ("input_ids", "attention_mask", "mask")}
        logp = sequence_logprobs(model, both["input_ids"], both["attention_mask"])  # pi itself, T = 1 (as TRL)
        return (logp * both["mask"]).sum(-1).chunk(2)

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        pc, pr = self.summed(self.module, micro)  # [b], [b]
        loss, h = online_dpo_loss(pc, pr, micro["ref_chosen"], micro["ref_rejected"], micro["weight"],
                                  self.cfg.beta, num_pairs=micro["n_pairs"][0])
        n = max(float(micro["n_pairs"][0]), 1.0)
        return loss, {"reward_accuracy": (((h > 0).float() * micro["weight"]).sum() / n).item()}
