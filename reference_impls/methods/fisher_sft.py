"""FisherSFT (Deb et al., "FisherSFT: Data-Efficient Supervised Fine-Tuning of Language Models Using
Information Gain", arXiv 2505.14826): under a budget of n training sentences, pick the ones that
maximise the information gain about the model, measured as the log-determinant of the Fisher
information of a linearisation of the LM's last layer (a multinomial logistic model on last-layer
embeddings), greedily; then SFT on the selected sentences:

    A_i   = sum_{j in completion of i} phi_ij phi_ij^T        phi_ij = last-layer embedding (unit norm)
    S_0   = {},  Sigma_0 = lambda I
    i_t   = argmax_{i not in S} log det(Sigma_{t-1} + A_i)    (greedy optimal design)
    Sigma_t = Sigma_{t-1} + A_{i_t},   until |S| = n;   then L_SFT on S

Conventions (ours where the paper is not followed literally): the Fisher of the softmax layer is
approximated by the outer products of the features alone (the softmax-covariance factor dropped,
as in the paper's feature-based design); phi are the hidden states that predict each completion
token, from the model the stage starts from, L2-normalised; lambda = 1. Pool 2000, budget 256, lr and
batch sizes are ours for the tiny preset. The gain of candidate i is computed by the matrix
determinant lemma, log det(I + Phi_i Sigma^-1 Phi_i^T), equal to log det(Sigma + A_i) - log det(Sigma).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.selection import SubsetSFT, completion_features, draw_pool
from reference_impls.methods.sft import Config as SFTConfig

NEEDS = {"demonstrations"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = False  # data selection + SFT from the raw model, like sft.py


@dataclass
class Config(SFTConfig):
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # demonstrations per step (drawn from the selected set)
    lr: float = 3e-3  # peak learning rate (ours, as sft.py)
    warmup_steps: int = 20  # linear warmup steps (ours, as sft.py)
    pool_size: int = 2000  # demonstrations drawn once as the candidate pool (ours)
    budget: int = 256  # number of sentences selected (n in the paper)
    ridge: float = 1.0  # lambda: Sigma_0 = lambda I (ours)


def greedy_logdet(feats: list[Tensor], budget: int, ridge: float = 1.0) -> tuple[list[int], float]:
    """Greedy selection maximising log det(ridge I + sum_{i in S} Phi_i^T Phi_i).
    feats: one [n_i, d] matrix per candidate -> (chosen indices in order, final log det)."""
    n_max, d = max(len(f) for f in feats), feats[0].shape[1]
    phi = torch.zeros(len(feats), n_max, d, dtype=torch.float64)  # zero rows: gain-neutral padding
    for i, f in enumerate(feats):
        phi[i, : len(f)] = f.double()
    sigma = ridge * torch.eye(d, dtype=torch.float64)
    eye = torch.eye(n_max, dtype=torch.float64)
    free = torch.ones(len(feats), dtype=torch.bool)
    chosen: list[int] = []
    for _ in range(min(budget, len(feats))):
        m = eye + phi @ torch.linalg.inv(sigma) @ phi.transpose(1, 2)  # I + Phi Sigma^-1 Phi^T  [N, n, n]
        gains = torch.where(free, torch.logdet(m), -torch.inf)  # = logdet(Sigma + A_i) - logdet(Sigma)
        best = int(gains.argmax())  # ties: the lowest index
        chosen.append(best)
        free[best] = False
        sigma = sigma + phi[best].T @ phi[best]  # Sigma += A_i
    return chosen, torch.logdet(sigma).item()


class Algo(SubsetSFT):
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        super().__init__(model, tok, task, cfg, seed)
        pool = draw_pool(task, cfg.pool_size, seed)
        phi = [f / f.norm(dim=-1, keepdim=True).clamp(min=1e-12)
               for f in completion_features(model, tok, pool)]  # unit-norm [n_i, H] each
        chosen, self.logdet = greedy_logdet(phi, cfg.budget, cfg.ridge)
        self.subset = [pool[i] for i in chosen]
