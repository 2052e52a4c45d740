"""Machinery shared by the single-stage SFT<->RL hybrids (methods/{luffy,srft,chord,nft,hpt,relift}.py).

    sample_groups(...)      n sampled completions per problem, rewarded    -> Rollout, rewards [P*n]
    mixed_groups(...)       each group = n_on sampled + n_off expert rows (the problem's solution,
                            teacher-forced, `forced` = 1 on its tokens), laid out group by group
    expert_rows(...)        the expert solutions of the given problems as a teacher-forced Rollout
    correct(rewards)        0/1: reward >= CORRECT (exact match on 0/1 rewards); per-group counts
    row_weights / wsum      per-row normalisers fixed at collect time, so a loss written as
                            wsum(l, mask, w) = sum_it l m w_i is a whole-batch mean however the
                            batch is split into micro-batches (gradient-accumulation invariance)
                            or over processes (torchrun: the counts are summed over ranks, so
                            N ranks' losses add up to one process's; core/distributed.py)
"""

from __future__ import annotations

import torch
from torch import Tensor

from reference_impls.core import distributed
from reference_impls.core.sampling import Rollout, cat_rollouts, expert_rollout, sample

CORRECT = 0.5  # a completion counts as correct when its reward is at least this


def correct(rewards: Tensor) -> Tensor:
    """[N] rewards -> [N] float 0/1."""
    return (rewards >= CORRECT).float()


def correct_counts(rewards: Tensor, group_size: int) -> Tensor:
    """Number of correct completions in each group of `group_size` consecutive rows. [N] -> [N/G]"""
    return correct(rewards).view(-1, group_size).sum(-1)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _rewards(task, problems, completions) -> Tensor:
    return torch.tensor([task.reward(p, o) for p, o in zip(problems, completions, strict=True)],
                        dtype=torch.float)


def sample_groups(model, tok, task, problems, n: int, cfg) -> tuple[Rollout, Tensor]:
    """n completions per problem (rows p*n .. p*n+n-1 share problem p), and their rewards.
    `cfg` supplies max_new_tokens, temperature, top_p, sampler_cache."""
    group = [p for p in problems for _ in range(n)]
    ro = sample(model, tok, [p.prompt for p in group], cfg.max_new_tokens, cfg.temperature,
                cfg.top_p, cache_implementation=cfg.sampler_cache)
    return ro, _rewards(task, group, ro.completions)


def expert_rows(tok, task, problems, device, n: int = 1) -> tuple[Rollout, Tensor]:
    """The expert solution of each problem, n copies each, teacher-forced (every completion token
    is `forced`), and its reward."""
    group = [p for p in problems for _ in range(n)]
    ro = expert_rollout(tok, [p.prompt for p in group], [p.solution for p in group], device)
    return ro, _rewards(task, group, [p.solution for p in group])


def take(ro: Rollout, idx: list[int]) -> Rollout:
    """The rows `idx` of a Rollout (same widths)."""
    i = torch.tensor(idx, dtype=torch.long, device=ro.input_ids.device)
    return Rollout(ro.input_ids[i], ro.attention_mask[i], ro.mask[i],
                   [ro.completions[k] for k in idx], ro.prompt_len, ro.forced[i])


def mixed_groups(model, tok, task, problems, n_on: int, n_off: int, cfg) -> tuple[Rollout, Tensor]:
    """Groups of n_on sampled + n_off expert rows per problem, group by group (G = n_on + n_off
    consecutive rows share a problem; the expert rows come last in each group)."""
    on, r_on = sample_groups(model, tok, task, problems, n_on, cfg)
    off, r_off = expert_rows(tok, task, problems, _device(model), n_off)
    both = cat_rollouts([on, off], tok.pad_token_id)
    N_on = len(on)
    order = [k for p in range(len(problems))
             for k in [*range(p * n_on, (p + 1) * n_on), *range(N_on + p * n_off, N_on + (p + 1) * n_off)]]
    return take(both, order), torch.cat([r_on, r_off])[order]


def to_batch(ro: Rollout) -> dict[str, Tensor]:
    return {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "mask": ro.mask,
            "forced": ro.forced}


def row_weights(mask: Tensor, rows: Tensor, mode: str = "token-mean", max_len: int = 1) -> Tensor:
    """Per-row weights w [B] over the selected `rows` [B] (0/1), zero elsewhere, such that
    wsum(l, mask, w) is  token-mean: sum_{i in rows, t} l m / sum_{i in rows, t} m
                         constant:   sum_{i in rows, t} l m / (|rows| * max_len)   (Dr. GRPO)
    over the whole batch: under torchrun, the rows and tokens of every rank (a collective: every
    rank calls it alike). Computed once at collect time and stored in the batch."""
    rows = rows.float().to(mask.device)
    if mode == "token-mean":
        return rows / distributed.all_sum((mask.sum(-1) * rows).sum()).clamp(min=1)
    if mode == "constant":
        return rows / (distributed.all_sum(rows.sum()).clamp(min=1) * max_len)
    raise ValueError(f"unknown aggregation {mode!r}")


def wsum(loss_tok: Tensor, mask: Tensor, w: Tensor) -> Tensor:
    """sum_{i,t} loss_tok m w_i.   loss_tok, mask [B, T], w [B] -> scalar"""
    return ((loss_tok * mask).sum(-1) * w).sum()
