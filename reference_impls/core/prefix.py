"""Machinery of the prefix / hint hybrids (BREAD, Prefix-RFT, UFT, SRL): expert prefixes measured
in steps or tokens, the branch-and-grow anchor search, the split of a prefixed rollout into its
forced (expert) and sampled (policy) tokens, and a clipped policy-gradient loss with per-token
advantages.

    step_prefix(steps, k)           = "".join(steps[:k])                       (k expert steps)
    token_prefix(tok, text, l)      = the first floor(l * |text|) tokens of text (|.| in tokens)
    AnchorSearch                    the prefix lengths tried for a group whose rollouts all failed
    policy_mask(ro) / expert_mask(ro)   sampled tokens (mask - forced) / forced prefix tokens
    clipped_pg_loss                 -min(rho A_t, clip(rho) A_t), A_t per token, aggregated
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core.losses import AggregationMode, aggregate
from reference_impls.core.sampling import Rollout, encode


def step_prefix(steps, k: int) -> str:
    """The first k expert steps, joined ("".join(steps) == solution)."""
    return "".join(steps[: max(0, k)])


def prefix_tokens(n: int, frac: float) -> int:
    """floor(frac * n), clipped to [0, n]: the token length of a fractional prefix."""
    return min(n, max(0, math.floor(frac * n + 1e-9)))  # +1e-9: 0.3 * 10 is 2.9999... in floats


def token_prefix(tok, text: str, frac: float) -> str:
    """The text of the first floor(frac * |text|) tokens of `text` (|text| in tokens)."""
    ids = encode(tok, [text])[0]
    return tok.decode(ids[: prefix_tokens(len(ids), frac)], skip_special_tokens=True)


class AnchorSearch:
    """Branch-and-grow rule for ONE prompt whose G rollouts all failed: propose a prefix length k
    (in expert steps), sample G continuations after the first k steps, report whether any
    succeeded, repeat until done. At most `max_tries` proposals, k in [1, n_steps - 1] (the policy
    always writes at least the last step).
        grow:   k = 1, 2, 3, ... ; stop at the first k with a success
        binary: binary search on [1, n_steps - 1] for the shortest k with a success (assumes
                success is monotone in k; the chosen k is the shortest successful one tried)
    `best` is the k whose group is used: the shortest successful k, else the longest k tried."""

    def __init__(self, n_steps: int, mode: Literal["grow", "binary"] = "grow", max_tries: int = 3):
        self.mode, self.left = mode, max_tries
        self.lo, self.hi = 1, n_steps - 1
        self.tried: list[int] = []
        self.best: int | None = None  # shortest successful k so far
        self.k = None if self.hi < 1 or max_tries < 1 else (1 if mode == "grow" else (self.lo + self.hi) // 2)

    @property
    def done(self) -> bool:
        return self.k is None

    def update(self, success: bool) -> None:
        k = self.k
        self.tried.append(k)
        self.left -= 1
        if success:
            self.best = k if self.best is None else min(self.best, k)
        if self.mode == "grow":
            nxt = None if success else k + 1
        else:
            self.lo, self.hi = (self.lo, k - 1) if success else (k + 1, self.hi)
            nxt = (self.lo + self.hi) // 2 if self.lo <= self.hi else None
        self.k = nxt if nxt is not None and nxt <= self.hi and self.left > 0 else None

    @property
    def chosen(self) -> int | None:
        """The k whose branched group is trained on (None: nothing was tried)."""
        return self.best if self.best is not None else (max(self.tried) if self.tried else None)


def policy_mask(ro: Rollout) -> Tensor:
    """Tokens the policy sampled (continuation after a forced prefix, EOS included).  [B, T-1]"""
    return ro.mask * (1 - ro.forced)


def expert_mask(ro: Rollout) -> Tensor:
    """Forced expert-prefix tokens.  [B, T-1]"""
    return ro.mask * ro.forced


def clipped_pg_loss(logp: Tensor, old_logp: Tensor, adv_tok: Tensor, mask: Tensor,
                    eps_low: float = 0.2, eps_high: float = 0.2,
                    aggregation: AggregationMode = "token-mean", max_len: int | None = None, *,
                    total_tokens: float | Tensor | None = None,
                    total_seqs: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """PPO/GRPO clipped surrogate with a per-token advantage (GRPO's is one per row: pass
    A[:, None].expand_as(logp)). logp, old_logp, adv_tok, mask [B, T] -> (loss, stats)."""
    ratio = torch.exp(logp - old_logp)  # rho [B, T]
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)  # clip(rho, 1-eps_low, 1+eps_high)
    loss_tok = -torch.minimum(ratio * adv_tok, clipped * adv_tok)  # -min(rho A_t, clip(rho) A_t)
    loss = aggregate(loss_tok, mask, aggregation, max_len, total_tokens=total_tokens,
                     total_seqs=total_seqs)
    clip_frac = ((ratio < 1 - eps_low) & (adv_tok < 0)) | ((ratio > 1 + eps_high) & (adv_tok > 0))
    return loss, {"clip_frac": aggregate(clip_frac.float(), mask, "token-mean",
                                         total_tokens=total_tokens).item()}


def take_rows(ro: Rollout, idx: list[int]) -> Rollout:
    """The rows `idx` of a rollout (same widths; `cat_rollouts` re-pads pieces of any widths)."""
    i = torch.tensor(idx, dtype=torch.long, device=ro.input_ids.device)
    return Rollout(ro.input_ids[i], ro.attention_mask[i], ro.mask[i], [ro.completions[j] for j in idx],
                   ro.prompt_len, ro.forced[i])


def rollout_batch(ro: Rollout, mask: Tensor, **extra: Tensor) -> dict[str, Tensor]:
    """The training batch of a rollout with the mask that the loss (and totals["tokens"]) uses."""
    return {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "mask": mask, **extra}
