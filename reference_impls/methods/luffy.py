"""LUFFY, Learning to reason Under oFF-policY guidance (Yan et al., arXiv 2504.14945).

Mixed-policy GRPO: each prompt's group holds N_on sampled completions and N_off expert solutions
(here the problem's `solution`, teacher-forced); rewards are normalised over the WHOLE group, so
the expert row lifts the baseline-relative signal of prompts the policy cannot solve yet.
    A_i = r_i - mean_group(r)                    (official: grpo_use_std=False; scale="std" divides by std)
    on-policy token:   l = -rho A,  rho = pi_theta / pi_old            (clip=True: PPO's -min(rho A, clip(rho) A))
    off-policy token:  l = -f(pi_theta) A,  f(p) = p / (p + gamma)     (policy shaping, no clip, no old prob)
    L = sum_{i,t} l m / (B * L_max) - c_H * mean_t H_t                (eq. 6 of the paper, aggregation below)
f's gradient f'(p) p = gamma p / (p + gamma)^2 up-weights low-probability expert tokens that the
plain importance weight p/pi_behaviour would ignore.
Paper vs official code (github.com/ElliottYan/LUFFY, exp_scripts/train.sh), official followed:
  * the paper writes CLIP(r, A, eps) for on-policy tokens; the script sets loss_remove_clip=True
    (plain -rho A). clip=True gives the paper's form (eps_low/eps_high). With one update per batch
    rho == 1 and the two are identical.
  * normaliser: the paper writes a token mean. The script sets loss_remove_token_mean=True, and
    the code (luffy/verl/verl/mix_src/mix_core_alg.py) then divides each MICRO-batch's token sum
    by L_max (the padded response width, max_response_length) -- not by its row count -- while
    the entropy bonus stays that micro-batch's token mean (use_dynamic_bsz: micro-batches are
    token-budgeted, so the PG term's weight against the entropy term follows the split). Our
    default, aggregation="constant", is sum / (B * L_max) over the whole batch (Dr. GRPO's
    constant: the official value divided by the rows, the same whatever the split);
    "token-mean" gives the paper's.
  * updates per batch: the script samples 128 prompts and steps on mini-batches of 64
    (ppo_mini_batch_size), 2 optimizer steps per batch; our default takes 1 (updates_per_batch=1;
    2 reproduces the count, pi_old then stored).
  * advantages without std (grpo_use_std=False); entropy bonus 0.001; n = 8 with n_prefix = 1,
    i.e. 7 sampled + 1 expert per group; gamma = 0.1 ("p_div_p_0.1").
Defaults lr 3e-4, 60 steps, 8 prompts x 8 rows per step are ours for the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core.hybrid import mixed_groups, row_weights, to_batch, wsum
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import group_advantages
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward", "expert_solutions"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps (one sampled batch each)
    batch_size: int = 64  # rows per step = prompts x group_size (expert rows included)
    lr: float = 3e-4  # peak learning rate (ours, tiny preset; paper 1e-6)
    group_size: int = 8  # rows per prompt, expert rows included (official n = 8)
    n_off: int = 1  # expert rows per group (official n_prefix = 1)
    gamma: float = 0.1  # policy shaping f(p) = p / (p + gamma) (official p_div_p_0.1)
    clip: bool = False  # PPO-clip the on-policy ratio (paper); official loss_remove_clip=True
    eps_low: float = 0.2  # lower clip range when clip=True
    eps_high: float = 0.2  # upper clip range when clip=True
    scale: Literal["std", "none"] = "none"  # advantage scaling (official grpo_use_std=False)
    aggregation: Literal["constant", "token-mean"] = "constant"  # official: sum / max_len
    entropy_coef: float = 0.001  # entropy bonus (official entropy_coeff)
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def luffy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, forced: Tensor,
               w: Tensor, gamma: float = 0.1, clip: bool = False, eps_low: float = 0.2,
               eps_high: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """logp, old_logp, mask, forced [B, T]; advantages, w [B] (row normalisers) -> (loss, stats)."""
    A = advantages.unsqueeze(-1)  # [B, 1]
    ratio = torch.exp(logp - old_logp)  # rho, on-policy tokens [B, T]
    on = -ratio * A  # -rho A
    if clip:
        on = torch.maximum(on, -torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * A)  # -min(rho A, clip(rho) A)
    p = torch.exp(logp)
    off = -(p / (p + gamma)) * A  # -f(pi_theta) A, f(p) = p / (p + gamma): no clip, no pi_old
    loss_tok = forced * off + (1 - forced) * on  # [B, T]
    return wsum(loss_tok, mask, w), {}


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        ro, rewards = mixed_groups(self.module, self.tok, self.task, problems,
                                   c.group_size - c.n_off, c.n_off, c)
        batch = to_batch(ro)
        batch["advantages"] = group_advantages(rewards, c.group_size, c.scale).to(ro.mask.device)
        all_rows = torch.ones(len(ro), device=ro.mask.device)
        batch["w"] = row_weights(ro.mask, all_rows, c.aggregation, c.max_new_tokens)
        batch["w_tok"] = row_weights(ro.mask, all_rows)  # token mean, for the entropy bonus
        if c.updates_per_batch > 1:  # pi_old differs from pi_theta after the first update
            batch["old_logp"] = sequence_logprobs(self.module, ro.input_ids, ro.attention_mask,
                                                  c.temperature)
        on = 1 - ro.forced.amax(-1)  # [B] sampled rows
        return batch, {"reward": (rewards.to(on.device) * on).sum().item() / on.sum().item(),
                       "completion_len": ro.mask.sum(-1).mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, ent = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"],
                                      c.temperature, return_entropy=True)  # [b, T-1]
        old = micro.get("old_logp", logp.detach())
        loss, stats = luffy_loss(logp, old, micro["advantages"], micro["mask"], micro["forced"],
                                 micro["w"], c.gamma, c.clip, c.eps_low, c.eps_high)
        entropy = wsum(ent, micro["mask"], micro["w_tok"])
        return loss - c.entropy_coef * entropy, {**stats, "entropy": entropy.item()}
