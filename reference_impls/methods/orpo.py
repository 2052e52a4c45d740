"""Odds Ratio Preference Optimization, ORPO (Hong et al., arXiv 2403.07691): SFT and preference
alignment in one stage, with no reference model. With the length-averaged log-likelihood
    log P(y|x) = 1/|y| sum_t log pi(y_t | x, y_<t),   odds(y|x) = P(y|x) / (1 - P(y|x))
    L_OR  = -log sigma( log odds(y_w|x) - log odds(y_l|x) )                  (eq. 7)
          log odds(y_w) - log odds(y_l) = (log P_w - log P_l) - (log(1 - P_w) - log(1 - P_l))
    L     = L_SFT + lambda L_OR                                              (eq. 6)
L_SFT is the NLL of the chosen sequence, a token mean over the whole batch. Conventions: the paper
writes L_SFT on the chosen response; the official code (xfactlab/orpo, src/orpo_trainer.py) and
TRL's experimental ORPOTrainer both take it over prompt AND completion tokens by default (the
official code drops the prompt only with its `disable_prompt_loss` flag). We follow the code:
`nll_on_prompt = True`; False is the completion-only variant. L_OR is averaged over pairs; log P is
the length-averaged completion log-prob in both codes; log(1 - P) is computed stably (log1mexp).
On addition the prompts are random digits, so their NLL is irreducible noise: there the
completion-only variant raises the preference margin and the default does not (tests/test_m_preference).
Defaults: lambda = 0.1 (TRL's `beta` default; the official code's `--alpha` argument defaults
to 1.0 at the stored commit, its run scripts set their own); lr 3e-4, batch 32 pairs, 60
steps ours for the tiny preset. Starts from the warm base like the other preference methods (the
paper's point is that ORPO can also start from a raw model: `--warm false`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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
    lam: float = 0.1  # lambda: weight of the odds-ratio term (TRL beta default 0.1)
    nll_on_prompt: bool = True  # SFT term over prompt + completion (official code, TRL); False: completion only


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(nll: Tensor, avg_chosen: Tensor, avg_rejected: Tensor, lam: float = 0.1, *,
              num_pairs: int | None = None) -> tuple[Tensor, Tensor]:
    """nll: the SFT term (already this micro-batch's share); avg_chosen/avg_rejected [B]: length-
    averaged completion log-probs. -> (loss, log odds ratio [B] detached)."""
    log_odds = (avg_chosen - avg_rejected) - (log1mexp(avg_chosen) - log1mexp(avg_rejected))  # [B]
    l_or = -F.logsigmoid(log_odds)  # L_OR = -log sigma(log odds_w - log odds_l)   (eq. 7)
    n = l_or.shape[0] if num_pairs is None else num_pairs
    return nll + lam * l_or.sum() / n, log_odds.detach()  # L_SFT + lambda L_OR   (eq. 6)


def pair_tensors(tok, pairs: list[tuple[str, str, str]], device) -> Batch:
    """chosen_* / rejected_* (input_ids, attention_mask, mask [completion tokens]) of one width."""
    B, eos = len(pairs), [tok.eos_token_id]
    prompts = encode(tok, [p for p, _, _ in pairs], prompt=True)
    comps = encode(tok, [c for _, c, _ in pairs] + [r for _, _, r in pairs])
    both = pad_prompt_completion(prompts + prompts, [c + eos for c in comps], tok.pad_token_id, device)
    batch: Batch = {}
    for k, v in both.items():
        batch[f"chosen_{k}"], batch[f"rejected_{k}"] = v[:B], v[B:]
    return batch


def pair_logprobs(model, b: Batch) -> tuple[Tensor, Tensor]:
    """Per-token log-probs [2B, T-1] of [chosen; rejected] in one forward, and their masks [2B, T-1]."""
    both = {k: torch.cat([b[f"chosen_{k}"], b[f"rejected_{k}"]]) for k in ("input_ids", "attention_mask", "mask")}
    return sequence_logprobs(model, both["input_ids"], both["attention_mask"]), both["mask"]


def length_averaged(logp: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """1/|y| sum_t m log p of [chosen; rejected] rows -> ([B], [B])."""
    return ((logp * mask).sum(-1) / mask.sum(-1)).chunk(2)


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.device = next(model.parameters()).device

    def nll_mask(self, b: Batch) -> Tensor:
        """Which scored tokens of the chosen rows the SFT term covers: every real token predicted
        from a real one (a left-padded row's first token has no real context, as in TRL's right-
        padded layout, where it is never a target), or the completion only.   [B, T-1]"""
        if not self.cfg.nll_on_prompt:
            return b["chosen_mask"]
        am = b["chosen_attention_mask"].float()
        return am[:, 1:] * am[:, :-1]  # target real and its context real

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        pairs = self.task.preference_pairs(self.cfg.batch_size, step_rng(self.seed, step))
        batch = pair_tensors(self.tok, pairs, self.device)
        batch["nll_tokens"] = self.nll_mask(batch).sum().expand(len(pairs)).clone()  # whole-batch count
        return batch, {}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        logp, mask = pair_logprobs(self.module, micro)  # [2b, T-1]
        b = micro["chosen_input_ids"].shape[0]
        nll = -(logp[:b] * self.nll_mask(micro)).sum() / micro["nll_tokens"][0]  # share of the token mean
        avg_c, avg_r = length_averaged(logp, mask)
        loss, log_odds = orpo_loss(nll, avg_c, avg_r, self.cfg.lam, num_pairs=totals["rows"])
        n = totals["rows"]
        return loss, {"nll": nll.item(), "log_odds_ratio": (log_odds.sum() / n).item(),
                      "reward_accuracy": ((avg_c > avg_r).float().sum() / n).item()}

    @torch.no_grad()
    def evaluate(self, n: int = 200) -> dict[str, float]:
        """Held-out ID problems paired with task.wrong_completion:
        policy_preference_accuracy  share with mean log pi(y_w) > mean log pi(y_l) (length-averaged,
                                    ORPO's own score; meaningful at the start)"""
        rng = random.Random(999)
        probs = self.task.eval_sets["in_distribution"][:n]
        b = pair_tensors(self.tok, [(p.prompt, p.solution, self.task.wrong_completion(p, rng)) for p in probs], self.device)
        self.module.eval()
        avg_c, avg_r = length_averaged(*pair_logprobs(self.module, b))
        self.module.train()
        return {"policy_preference_accuracy": (avg_c > avg_r).float().mean().item(),
                "logp_margin": (avg_c - avg_r).mean().item()}
