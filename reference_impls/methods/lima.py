"""LIMA (Zhou et al., "LIMA: Less Is More for Alignment", arXiv 2305.11206): plain SFT on a small,
curated set of demonstrations (1,000 hand-picked prompt-response pairs in the paper, selected for
quality and for diversity of prompts), beside SFT on everything:

    L(theta) = - sum_{(x,y) in D_curated} sum_t log pi_theta(y_t | x, y_<t) / #tokens,  |D_curated| small

The paper's curation is manual; ours is a stated, task-agnostic rule on a pool drawn once
(`core/selection.py`):
  1. pool      `pool_size` demonstrations, task.demonstrations(pool_size, Random(seed))
  2. dedupe    keep the first row of each distinct prompt
  3. length    keep completions whose character length lies in the pool's
               [len_lo, len_hi] quantile band (ours: outliers in length out)
  4. diversity greedy farthest-point selection of `subset_size` rows on hashed character-bigram
               vectors of the prompts (max-min cosine distance; LIMA sought diverse prompts)
`curate=False` trains on the whole pool instead (SFT on everything, for comparison).
Then SFT (token-mean NLL) on batches drawn with replacement from the subset. Every default (pool 2000,
subset 256, band 5-95 %) is ours for the tiny preset; so are lr and batch sizes (sft.py's).
"""

from __future__ import annotations

from dataclasses import dataclass

from reference_impls.core.selection import SubsetSFT, char_ngram_features, draw_pool, farthest_point
from reference_impls.methods.sft import Config as SFTConfig

NEEDS = {"demonstrations"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = False  # data-centric SFT: trains the raw model, like sft.py


@dataclass
class Config(SFTConfig):
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # demonstrations per step (drawn from the subset)
    lr: float = 3e-3  # peak learning rate (ours, as sft.py)
    warmup_steps: int = 20  # linear warmup steps (ours, as sft.py)
    pool_size: int = 2000  # demonstrations drawn once as the candidate pool (ours)
    subset_size: int = 256  # size of the curated subset (the paper: 1,000 of a larger pool)
    len_lo: float = 0.05  # lower quantile of completion length kept (ours)
    len_hi: float = 0.95  # upper quantile of completion length kept (ours)
    curate: bool = True  # False: SFT on the whole pool (the "everything" baseline)


def _quantile(xs: list[int], q: float) -> float:
    """Nearest-rank quantile (no interpolation): sorted(xs)[round(q * (n - 1))]."""
    s = sorted(xs)
    return s[round(q * (len(s) - 1))]


def lima_select(demos: list[tuple[str, str]], subset_size: int, len_lo: float = 0.05,
                len_hi: float = 0.95) -> list[int]:
    """Indices into `demos` of the curated subset, in selection order (rule in the docstring)."""
    seen, rows = set(), []
    for i, (p, _) in enumerate(demos):  # 2. dedupe prompts (first occurrence)
        if p not in seen:
            seen.add(p)
            rows.append(i)
    lens = [len(demos[i][1]) for i in rows]
    lo, hi = _quantile(lens, len_lo), _quantile(lens, len_hi)
    rows = [i for i, n in zip(rows, lens, strict=True) if lo <= n <= hi]  # 3. length band
    feats = char_ngram_features([demos[i][0] for i in rows])  # [N, 256]
    return [rows[j] for j in farthest_point(feats, subset_size)]  # 4. diversity


class Algo(SubsetSFT):
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        super().__init__(model, tok, task, cfg, seed)
        pool = draw_pool(task, cfg.pool_size, seed)
        self.subset = ([pool[i] for i in lima_select(pool, cfg.subset_size, cfg.len_lo, cfg.len_hi)]
                       if cfg.curate else pool)
