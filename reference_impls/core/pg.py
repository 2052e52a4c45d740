"""Machinery shared by the critic-free policy-gradient methods (reinforce, remax, rloo,
reinforce-pp, raft-pp, gspo, dapo, dr-grpo, cispo, sapo, gmpo): sample-and-score, rebuilding a
batch from kept rows, group filters (dynamic sampling, Reinforce-Rej), overlong shaping (DAPO),
sequence-level importance ratios and the sequence-level policy-gradient loss.

The two policy-gradient knobs every group method carries (one place, TRL / verl names):
  aggregation    how token losses l [B, T] become one number (core/losses.aggregate; verl's
                 `loss_agg_mode`, TRL's `loss_type` normaliser): token-mean (TRL dapo/bnpo/cispo),
                 token-sum, seq-mean-token-mean (TRL grpo/sapo), seq-mean-token-sum, constant
                 (TRL dr_grpo: sum / (B * max_new_tokens)). Normalisers are the *global* batch's
                 token / row counts (`totals`, summed over ranks by core/train.py).
  scale_rewards  advantage of reward r_i in its group g (TRL `scale_rewards`, `scaled_advantages`):
                 group  (r_i - mean_g r) / (std_g r + 1e-4)
                 batch  (r_i - mean_g r) / (std_batch r + 1e-4), std over the whole step's batch
                        (all ranks; PPO-Lite, arXiv 2508.08221, as TRL cites)
                 none   r_i - mean_g r                                           (Dr. GRPO)

Layout: a batch is `[left-padded prompt | completion right-padded after EOS]` (core/sampling.py);
per-token tensors are [B, T-1] and `mask` marks the scored completion tokens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core import distributed as dist
from reference_impls.core.diagnostics import clip_stats, truncated  # noqa: F401  (truncated: re-exported)
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import group_advantages
from reference_impls.core.sampling import pad_prompt_completion, sample
from reference_impls.core.train import Batch, TrainConfig, step_rng

ScaleRewards = Literal["group", "batch", "none", "loo", "std"]  # "std" = "group" (older runs), "loo": RLOO's baseline


# ------------------------------------------------------------------------------ sampling & rows
def rollout(algo, problems: list, greedy: bool = False) -> tuple[Batch, Tensor]:
    """Sample one completion per problem (repeat a problem for a group) with core.sampling.sample
    and score it with the task's reward.  -> (batch, rewards [B])."""
    c = algo.cfg
    ro = sample(algo.module, algo.tok, [p.prompt for p in problems], c.max_new_tokens,
                c.temperature, getattr(c, "top_p", 1.0), greedy=greedy,
                cache_implementation=getattr(c, "sampler_cache", None))
    rewards = torch.tensor([float(algo.task.reward(p, o)) for p, o in zip(problems, ro.completions, strict=True)])
    batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "mask": ro.mask}
    return batch, rewards.to(ro.mask.device)


def rebuild(parts: list[Batch], rows: list[list[int]], pad_id: int) -> Batch:
    """Keep rows `rows[k]` of batch `parts[k]` and lay them out again as one batch (the parts may
    have different prompt / completion widths, e.g. several dynamic-sampling tries).  Extra
    per-row keys (rewards, advantages, flags: one value per row) are carried along."""
    prompts, comps, extra = [], [], {}
    for b, keep in zip(parts, rows, strict=True):
        P = int(b["mask"].any(0).float().argmax()) + 1  # prompt width: every completion has >= 1 token
        for i in keep:
            ids, am = b["input_ids"][i], b["attention_mask"][i].bool()
            prompts.append(ids[:P][am[:P]].tolist())
            comps.append(ids[P:][am[P:]].tolist())
        for k, v in b.items():
            if k not in ("input_ids", "attention_mask", "mask"):
                extra.setdefault(k, []).append(v[keep])
    out = pad_prompt_completion(prompts, comps, pad_id, parts[0]["input_ids"].device)
    return out | {k: torch.cat(v) for k, v in extra.items()}


def mixed_groups(rewards: Tensor, group_size: int) -> Tensor:
    """Groups whose rewards are not all equal (neither all right nor all wrong): the dynamic-sampling
    filter of DAPO (arXiv 2503.14476) and Reinforce-Rej's (arXiv 2504.11343).  [N] -> bool [N / G]."""
    r = rewards.view(-1, group_size)
    return (r != r[:, :1]).any(-1)


def group_rows(keep: Tensor, group_size: int) -> list[int]:
    """Row indices of the kept groups.   bool [n_groups] -> list of N' ints."""
    return [g * group_size + j for g in keep.nonzero().flatten().tolist() for j in range(group_size)]


# ------------------------------------------------------------------------------ length shaping
def completion_lengths(mask: Tensor) -> Tensor:
    """|o| in tokens, EOS included.   mask [B, T-1] -> [B]."""
    return mask.sum(-1)


def overlong_penalty(lengths: Tensor, max_len: int, buffer: int) -> Tensor:
    """DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13), L_max = max_len, L_cache = buffer:
        0                                  if |y| <= L_max - L_cache
        ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
        -1                                 if |y| > L_max                        [B] -> [B]"""
    expected = max_len - buffer
    pen = (expected - lengths.float()) / buffer
    return torch.where(lengths <= expected, torch.zeros_like(pen), pen.clamp(min=-1.0))


# ------------------------------------------------------------------------------ advantages
def batch_std(rewards: Tensor) -> Tensor:
    """Unbiased (N-1) std of the rewards of the whole step's batch, over every rank (sums of r and
    r^2 are all-reduced, float64), as TRL's nanstd over the gathered rewards.   [N] -> scalar"""
    r = rewards.double()
    n, s1, s2 = (dist.all_sum(x) for x in (torch.tensor(float(r.numel()), dtype=torch.float64), r.sum(), (r * r).sum()))
    var = (s2 - s1 * s1 / n) / (n - 1).clamp(min=1)
    return var.clamp(min=0).sqrt().to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def scaled_advantages(rewards: Tensor, group_size: int, scale_rewards: ScaleRewards = "group",
                      eps: float = 1e-4) -> Tensor:
    """A_i = r_i - mean_g r, divided by (std + eps) per `scale_rewards` (module doc). Every
    rank must call it the same number of times per step ("batch" all-reduces).   [N] -> [N]"""
    if scale_rewards in ("group", "std"):
        return group_advantages(rewards, group_size, "std", eps)
    if scale_rewards in ("none", "loo"):
        return group_advantages(rewards, group_size, scale_rewards)
    if scale_rewards == "batch":
        return group_advantages(rewards, group_size, "none") / (batch_std(rewards.float()) + eps)
    raise ValueError(f"scale_rewards must be group, batch or none (got {scale_rewards!r})")


# ------------------------------------------------------------------------------ losses
def sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor, length_norm: bool = False) -> Tensor:
    """log pi_theta(y|x) / pi_old(y|x) = sum_t (logp - old_logp) (or its token mean, GSPO's
    length-normalised log s_i).   [B, T] x3 -> [B]"""
    d = ((logp - old_logp) * mask).sum(-1)
    return d / mask.sum(-1).clamp(min=1) if length_norm else d


def sequence_pg_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                     eps_low: float | None = None, eps_high: float | None = None,
                     length_norm: bool = False, *, total_seqs: int | None = None,
                     ) -> tuple[Tensor, dict[str, float]]:
    """Sequence-level policy gradient with a sequence-level importance ratio s_i:
        s_i = pi_theta(y_i|x) / pi_old(y_i|x)   (length_norm: s_i^{1/|y_i|}, GSPO)
        l_i = -s_i A_i                                            (eps None: plain importance weight)
        l_i = -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i)   (clipped)
        L = 1/B sum_i l_i   (B = `total_seqs`, the whole batch's rows)
    At s = 1 (one update per batch, pi_old = sg[pi_theta]) the value is -mean(A) and the gradient
    -1/B sum_i A_i grad log pi(y_i|x) (the REINFORCE / Williams 1992 estimator; / |y_i| with
    length_norm).   logp, old_logp, mask [B, T]; advantages [B] -> (scalar, stats)"""
    s = torch.exp(sequence_log_ratio(logp, old_logp, mask, length_norm))  # [B]
    if eps_low is None:
        per_seq, clipped = -s * advantages, torch.zeros_like(s, dtype=torch.bool)
    else:
        s_clip = torch.clamp(s, 1 - eps_low, 1 + eps_high)
        per_seq = -torch.minimum(s * advantages, s_clip * advantages)  # -min(s A, clip(s) A)
        clipped = ((s < 1 - eps_low) & (advantages < 0)) | ((s > 1 + eps_high) & (advantages > 0))
    n = len(s) if total_seqs is None else total_seqs
    sd = s.detach()
    stats = {"clip_frac": clipped.float().sum().item() / n, "ratio": sd.sum().item() / n}
    if eps_low is not None:  # shares of sequences (TRL counts a sequence ratio once per sequence)
        lo = ((sd < 1 - eps_low) & (advantages < 0)).float().sum().item() / n
        stats |= {"clip_ratio_low": lo, "clip_ratio_high": stats["clip_frac"] - lo}
    return per_seq.sum() / n, stats


@torch.no_grad()
def group_collect(algo, step: int) -> tuple[Batch, dict[str, float]]:
    """GRPO's collect: `batch_size / group_size` prompts, G samples each, advantages per
    `cfg.scale_rewards` (reference / pi_old log-probs added by `algo.finish`)."""
    c = algo.cfg
    problems = algo.task.prompts(c.batch_size // c.group_size, step_rng(algo.seed, step))
    batch, r = rollout(algo, [p for p in problems for _ in range(c.group_size)])
    batch["advantages"] = scaled_advantages(r, c.group_size, c.scale_rewards)
    return algo.finish(batch), {"reward": r.mean().item()}


# ------------------------------------------------------------------------------ a base Algo
@dataclass
class SampledConfig(TrainConfig):
    """The options every on-policy sampling method shares (a method's Config extends it)."""

    steps: int = 100  # optimizer steps (sampled batches)
    batch_size: int = 64  # completions per step = prompts x group_size
    lr: float = 3e-4  # peak learning rate (AdamW; ours)
    temperature: float = 1.0  # sampling (and scoring) temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


class PGAlgo:
    """What every method of the family shares: the policy, an optional frozen reference, scoring,
    and pi_old log-probs stored when a batch gets several updates (`updates_per_batch` > 1)."""

    def __init__(self, model, tok, task, cfg, seed: int = 0, ref: bool = False):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if ref else None

    def logp(self, model, b: Batch) -> Tensor:
        return sequence_logprobs(model, b["input_ids"], b["attention_mask"], self.cfg.temperature)

    def finish(self, batch: Batch, with_ref: bool = True) -> Batch:
        """Add ref_logp (if a reference is kept and `with_ref`: the loss needs it) and old_logp (if
        pi_old will differ from pi_theta)."""
        if with_ref and self.ref is not None and "ref_logp" not in batch:
            batch["ref_logp"] = self.logp(self.ref, batch)  # [B, T-1]
        if self.cfg.updates_per_batch > 1 and "old_logp" not in batch:
            batch["old_logp"] = self.logp(self.module, batch)  # [B, T-1]
        return batch

    def current(self, micro: Batch) -> tuple[Tensor, Tensor]:
        """(logp with grad, old_logp): old = sg[logp] with one update per batch (ratio 1). The
        per-token entropy of the same forward is left in micro["_entropy"] (core/diagnostics.py)."""
        logp, ent = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"],
                                      self.cfg.temperature, return_entropy=True)
        micro["_entropy"] = ent.detach()
        return logp, micro.get("old_logp", logp.detach())
