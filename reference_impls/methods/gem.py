"""GEM: entropic distribution matching for SFT (Li et al., "Preserving Diversity in Supervised
Fine-Tuning of Large Language Models", arXiv 2408.16673). Instead of cross-entropy (forward KL to
the data), GEM solves a reverse-KL distribution-matching problem with an entropy regulariser,
    min_theta E_x [ KL(pi_theta(.|x) || p_data(.|x)) - beta' H(pi_theta(.|x)) ]
through a game with an auxiliary distribution q; the inner problem has the closed form
q = softmax(z / beta) (z = the policy's logits), which gives the per-token loss the official code
(github.com/liziniu/GEM, sft_trainer_v2.py `gem_loss`) minimises:

    l_t = - sum_v sg(q_v) sg(w_v) (log pi_theta(y_t) - log pi_theta(v)),   q = softmax(z_t / beta)
    w_v = 1                                   (h = "linear")
    w_v = sigmoid(0.01 (z_v - z_{y_t}))        (h = "logsigmoid": h(u) = log sigmoid(0.01 u) rescaled)
    L   = sum_{i,t} m_it l_it / sum_{i,t} m_it                 (global token mean, as the code)

With h linear the logit gradient of l_t is q - onehot(y_t): cross-entropy would be p - onehot(y_t),
so beta < 1 stops the fit earlier and keeps the distribution flatter (beta -> 1 recovers CE's fixed
point). Defaults beta = 0.7 and h = "logsigmoid" are the official training scripts'
(scripts/*/train_gem_*.sh); lr, steps, batch sizes are ours (as sft.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core.logprobs import position_ids
from reference_impls.core.losses import aggregate
from reference_impls.methods.sft import Algo as SFTAlgo
from reference_impls.methods.sft import Config as SFTConfig

NEEDS = {"demonstrations"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = False  # a CE replacement: trains the raw model, like sft.py


@dataclass
class Config(SFTConfig):
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # demonstrations per step
    lr: float = 3e-3  # peak learning rate (ours, as sft.py)
    warmup_steps: int = 20  # linear warmup steps (ours, as sft.py)
    beta: float = 0.7  # temperature of q = softmax(z / beta); 1 -> CE's fixed point (official: 0.7)
    h: Literal["logsigmoid", "linear"] = "logsigmoid"  # the paper's h function (official scripts: logsigmoid)


def gem_loss(logits: Tensor, targets: Tensor, mask: Tensor, beta: float = 0.7,
             h: str = "logsigmoid", *, total_tokens: float | Tensor | None = None
             ) -> tuple[Tensor, dict[str, float]]:
    """logits [B, T, V] (position t scores targets[:, t]), targets [B, T], mask [B, T] -> (scalar, stats)."""
    logits = logits.float()
    logp_all = torch.log_softmax(logits, -1)  # log pi(v)   [B, T, V]
    logp_y = logp_all.gather(-1, targets.unsqueeze(-1))  # log pi(y_t)   [B, T, 1]
    with torch.no_grad():
        q = torch.softmax(logits / beta, -1)  # q = softmax(z / beta)   [B, T, V]
        if h == "linear":
            w = torch.ones_like(logits)
        elif h == "logsigmoid":
            w = torch.sigmoid(0.01 * (logits - logits.gather(-1, targets.unsqueeze(-1))))  # [B, T, V]
        else:
            raise ValueError(f"unknown GEM h {h!r}")
    loss_tok = -(q * w * (logp_y - logp_all)).sum(-1)  # l_t = -sum_v q w (log pi(y) - log pi(v))
    loss = aggregate(loss_tok, mask, "token-mean", total_tokens=total_tokens)
    nll = aggregate(-logp_y.squeeze(-1).detach(), mask, "token-mean", total_tokens=total_tokens)
    return loss, {"nll": nll.item()}


class Algo(SFTAlgo):
    """SFT's data (a batch of demonstrations per step); GEM's loss on the full logits."""

    def loss(self, micro, totals) -> tuple[Tensor, dict[str, float]]:
        ids, am = micro["input_ids"], micro["attention_mask"]
        logits = self.module(input_ids=ids, attention_mask=am, position_ids=position_ids(am)).logits
        return gem_loss(logits[:, :-1], ids[:, 1:], micro["mask"], self.cfg.beta, self.cfg.h,
                        total_tokens=totals["tokens"])
