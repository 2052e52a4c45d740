"""Data selection for the data-centric SFT methods (LIMA, FisherSFT): draw a pool of demonstrations
once, choose a subset by a stated rule, then run plain SFT on that subset.

    pool      = task.demonstrations(pool_size, Random(seed))        drawn once, a function of seed
    subset    = rule(pool)                                           the method's selection rule
    batch(s)  = batch_size rows of `subset` drawn with step_rng(seed, s)   (with replacement)
    L         = SFT token-mean NLL on the batch                      (methods/sft.py)

Selection happens in `__init__` on the model the stage starts from, so a resumed run (the runner
rebuilds the Algo on the same start model) selects the very same subset.
"""

from __future__ import annotations

import random
import zlib

import torch
from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import sft_loss
from reference_impls.core.sampling import prompt_completion_batch
from reference_impls.core.train import Batch, step_rng


def draw_pool(task, n: int, seed: int) -> list[tuple[str, str]]:
    """The candidate pool: n (prompt, completion) demonstrations drawn once with Random(seed)."""
    return task.demonstrations(n, random.Random(seed))


def char_ngram_features(texts: list[str], n: int = 2, dim: int = 256) -> Tensor:
    """Unit-norm bag of character n-grams, hashed (crc32: stable across processes) into `dim`
    buckets: a task-agnostic text embedding for diversity.   [len(texts)] -> [N, dim]"""
    out = torch.zeros(len(texts), dim)
    for i, t in enumerate(texts):
        t = f"^{t}$"  # boundary marks: short texts still get n-grams
        for j in range(max(1, len(t) - n + 1)):
            out[i, zlib.crc32(t[j : j + n].encode()) % dim] += 1.0
    return out / out.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def farthest_point(features: Tensor, k: int) -> list[int]:
    """Greedy max-min diversity: start at row 0, then repeatedly add the row whose largest cosine
    similarity to the chosen rows is smallest (ties: lowest index).   features [N, D] (unit rows)."""
    k = min(k, len(features))
    chosen = [0]
    nearest = features @ features[0]  # [N] max similarity to the chosen set
    nearest[0] = float("inf")
    while len(chosen) < k:
        i = int(torch.argmin(nearest))
        chosen.append(i)
        nearest = torch.maximum(nearest, features @ features[i])
        nearest[chosen] = float("inf")
    return chosen


@torch.no_grad()
def completion_features(model, tok, demos: list[tuple[str, str]], batch_size: int = 256) -> list[Tensor]:
    """Last-layer hidden states at the positions that score each completion token (the features
    the LM head sees, as in FisherSFT's last-layer linearisation): one [n_tokens_i, H] per demo."""
    device = next(model.parameters()).device
    out: list[Tensor] = []
    was_training = model.training
    model.eval()
    for i in range(0, len(demos), batch_size):
        chunk = demos[i : i + batch_size]
        b = prompt_completion_batch(tok, [p for p, _ in chunk], [c for _, c in chunk], device)
        _, hidden = sequence_logprobs(model, b["input_ids"], b["attention_mask"], return_hidden=True)
        h = hidden[:, :-1].float()  # [b, T-1, H]: position t predicts token t+1, like `mask`
        out += [h[r][b["mask"][r].bool()].cpu() for r in range(len(chunk))]
    model.train(was_training)
    return out


class SubsetSFT:
    """SFT on a fixed subset of demonstrations (`self.subset`, set by the subclass's __init__)."""

    subset: list[tuple[str, str]]

    def __init__(self, model, tok, task, cfg, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        rng = step_rng(self.seed, step)
        demos = [self.subset[rng.randrange(len(self.subset))] for _ in range(self.cfg.batch_size)]
        batch = prompt_completion_batch(self.tok, [p for p, _ in demos], [c for _, c in demos],
                                        self.device)
        return batch, {"subset_size": float(len(self.subset))}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        logp = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"])  # [b, T-1]
        return sft_loss(logp, micro["mask"], total_tokens=totals["tokens"]), {}
