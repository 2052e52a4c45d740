"""Bradley-Terry reward model, the RM stage of InstructGPT (Ouyang et al., arXiv 2203.02155, §3.5):
a scalar head on the policy's backbone, trained on preference pairs so that
    P(y_w > y_l | x) = sigma( r(x, y_w) - r(x, y_l) )
    L = -E log sigma( r(x, y_w) - r(x, y_l) )                        (eq. 1 of the paper)
averaged over pairs. r is read at the completion's EOS (core/reward_model.py). InstructGPT trains
on all K-choose-2 comparisons of a prompt as one batch element; with pairs, that is this loss.
TRL's RewardTrainer has the same loss (plus an optional margin and `center_rewards_coefficient`,
offered here as `center_coef`, default 0 as TRL).
Not a registry method: it PRODUCES a reward model (`save_reward_model(path)`, an HF folder that
core/reward_model.load_reward_model and reward_fn read), not a policy.
Defaults: the backbone starts from the (warm) policy, as InstructGPT starts its RM from the SFT
model; lr 1e-3, batch 32 pairs, 100 steps ours for the tiny preset.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from reference_impls.core.lora import merge_lora
from reference_impls.core.reward_model import build_reward_model, rewards
from reference_impls.core.sampling import encode, pad_prompt_completion
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"preference_pairs"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True
PRODUCES = "reward_model"  # what this stage yields (not a policy)


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps
    batch_size: int = 32  # preference pairs per step
    lr: float = 1e-3  # peak learning rate (ours, tiny preset)
    center_coef: float | None = None  # TRL's center_rewards_coefficient: + c * mean((r_w + r_l)^2)


def rm_loss(r_chosen: Tensor, r_rejected: Tensor, margin: Tensor | None = None,
            center_coef: float | None = None, *, num_pairs: int | None = None) -> Tensor:
    """r_chosen, r_rejected [B] scalar rewards (margin [B] optional) -> mean -log sigma(r_w - r_l)."""
    d = r_chosen - r_rejected if margin is None else r_chosen - r_rejected - margin  # [B]
    losses = -F.logsigmoid(d)  # -log sigma(r(x, y_w) - r(x, y_l))   (eq. 1)
    if center_coef:
        losses = losses + center_coef * (r_chosen + r_rejected) ** 2  # TRL's reward centring
    n = losses.shape[0] if num_pairs is None else num_pairs
    return losses.sum() / n


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.tok, self.task, self.cfg, self.seed = tok, task, cfg, seed
        self.module = build_reward_model(model).train()  # what is trained: backbone + scalar head
        self.device = next(self.module.parameters()).device

    def pairs_batch(self, pairs: list[tuple[str, str, str]]) -> Batch:
        """input_ids / attention_mask [2B, T] = [chosen; rejected], prompt left-padded, + EOS."""
        eos = [self.tok.eos_token_id]
        prompts = encode(self.tok, [p for p, _, _ in pairs], prompt=True)
        comps = encode(self.tok, [c for _, c, _ in pairs] + [r for _, _, r in pairs])
        both = pad_prompt_completion(prompts + prompts, [c + eos for c in comps], self.tok.pad_token_id, self.device)
        B = len(pairs)
        return {"chosen_input_ids": both["input_ids"][:B], "rejected_input_ids": both["input_ids"][B:],
                "chosen_attention_mask": both["attention_mask"][:B],
                "rejected_attention_mask": both["attention_mask"][B:]}

    def scores(self, b: Batch) -> tuple[Tensor, Tensor]:
        """r(x, y_w), r(x, y_l) [B] each, one forward over [chosen; rejected]."""
        ids = torch.cat([b["chosen_input_ids"], b["rejected_input_ids"]])
        mask = torch.cat([b["chosen_attention_mask"], b["rejected_attention_mask"]])
        return rewards(self.module, ids, mask).chunk(2)

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        return self.pairs_batch(self.task.preference_pairs(self.cfg.batch_size, step_rng(self.seed, step))), {}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        rc, rr = self.scores(micro)
        loss = rm_loss(rc, rr, center_coef=self.cfg.center_coef, num_pairs=totals["rows"])
        n = totals["rows"]
        return loss, {"accuracy": ((rc > rr).float().sum() / n).item(),
                      "margin": ((rc - rr).detach().sum() / n).item()}

    @torch.no_grad()
    def evaluate(self, n: int = 200) -> dict[str, float]:
        """Held-out ID problems paired with task.wrong_completion:
        rm_accuracy  share of pairs with r(x, y_w) > r(x, y_l);  rm_margin  mean r(y_w) - r(y_l)"""
        rng = random.Random(999)
        probs = self.task.eval_sets["in_distribution"][:n]
        b = self.pairs_batch([(p.prompt, p.solution, self.task.wrong_completion(p, rng)) for p in probs])
        self.module.eval()
        rc, rr = self.scores(b)
        self.module.train()
        return {"rm_accuracy": (rc > rr).float().mean().item(), "rm_margin": (rc - rr).mean().item()}

    def save_reward_model(self, path: str | Path) -> Path:
        """Write the reward model HF-style (model + tokenizer): load it with
        core.reward_model.load_reward_model(path) or AutoModelForSequenceClassification."""
        path = Path(path)
        self.module = merge_lora(self.module)  # --lora: W + alpha/r B A, a plain model (no-op without)
        self.module.config.pad_token_id = self.tok.pad_token_id
        self.module.save_pretrained(path)
        self.tok.save_pretrained(path)
        return path
