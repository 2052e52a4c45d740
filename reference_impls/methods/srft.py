"""SRFT, Supervised Reinforcement Fine-Tuning (Fu et al., arXiv 2506.19767): SFT and RL in one
stage, balanced by entropy-aware weights. Each prompt's group holds sampled completions and the
expert demonstration (as in LUFFY); with H_i = sg(mean_t entropy of row i):
    L_SFT^demo   = w_SFT * NLL(demo),          w_SFT = 0.5 * exp(-H)    (high entropy: less SFT)
    L_RL^demo    = -f(pi_theta) A_demo on demo tokens, f(p) = p/(p+gamma)  (LUFFY's off-policy term,
                   A over the whole group without std)
    L_RL^rollout = -A log pi_theta,  A = w_RL = 0.1 * exp(H) if the rollout is correct, A = -1 if not
    L_SRFT = L_SFT^demo + L_RL^demo + L_RL^rollout - c_H * mean_t H_t
SFT part: token mean over the demo tokens of the batch; RL parts: sum / (B * L_max) over the group
rows (Dr. GRPO's constant).
Sources: no official SRFT code was found. This follows the paper's three terms as the HPT authors'
reimplementation does (github.com/TsinghuaC3I/Unify-Post-Training, offline_loss_type="srft",
exp_scripts/train_srft.sh): H per sequence (masked mean over that row's tokens), demo term with
gamma = 0.1, 7 sampled + 1 demo per group, entropy bonus 0.001. `demo_rl=False` drops L_RL^demo
(the two-term form: weighted SFT on demos + weighted RL on rollouts). Differences:
  * the paper writes L_RL^demo as a PPO-clipped importance-weighted surrogate (per the issue-21
    review; the paper's equation was not re-read here); the reimplementation, and we, use
    LUFFY's shaped -f(pi) A with no clip and no pi_old.
  * normaliser: with loss_remove_token_mean=True the reimplementation divides each micro-batch's
    RL token sum by L_max (max_response_length), not by its rows, while its weighted SFT term
    and entropy bonus are that micro-batch's token means, so its SFT-vs-RL balance differs from
    ours (whole-batch normalisers above, independent of micro-batching).
  * updates per batch: train_srft.sh samples 128 prompts, ppo_mini_batch_size 64 -> 2 optimizer
    steps per batch; ours 1 (updates_per_batch): our rollout term -A log pi holds no importance
    ratio, so it is exact only at the first update on a batch.
Defaults lr 3e-4, 60 steps, 8 prompts x 8 rows are ours for the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core.hybrid import correct, mixed_groups, row_weights, to_batch, wsum
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import group_advantages
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward", "expert_solutions"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps (one sampled batch each)
    batch_size: int = 64  # rows per step = prompts x group_size (demo rows included)
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    group_size: int = 8  # rows per prompt: group_size - 1 rollouts + 1 demonstration
    sft_scale: float = 0.5  # w_SFT = sft_scale * exp(-H) (paper 0.5)
    rl_scale: float = 0.1  # w_RL = rl_scale * exp(H) on correct rollouts (paper 0.1)
    neg_adv: float = -1.0  # advantage of wrong rollouts (paper -1)
    demo_rl: bool = True  # add L_RL^demo (shaped off-policy policy gradient on the demo)
    gamma: float = 0.1  # shaping f(p) = p / (p + gamma) of L_RL^demo
    entropy_coef: float = 0.001  # entropy bonus (the LUFFY/HPT scripts' entropy_coeff)
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def srft_loss(logp: Tensor, entropy: Tensor, mask: Tensor, is_demo: Tensor, is_correct: Tensor,
              demo_adv: Tensor, w_sft: Tensor, w_rl: Tensor, sft_scale: float = 0.5,
              rl_scale: float = 0.1, neg_adv: float = -1.0, demo_rl: bool = True,
              gamma: float = 0.1) -> tuple[Tensor, dict[str, float]]:
    """logp, entropy, mask [B, T]; is_demo, is_correct, demo_adv (group advantage, used on demo
    rows), w_sft (token-mean weights over demo rows), w_rl (row weights over all rows) [B]."""
    m = mask
    H = ((entropy * m).sum(-1) / m.sum(-1).clamp(min=1)).detach()  # H_i, row mean entropy [B]
    coef_sft = sft_scale * torch.exp(-H)  # w_SFT = 0.5 exp(-H)
    sft = wsum(-logp * coef_sft[:, None], m, w_sft)  # w_SFT * NLL on demos
    A = torch.where(is_correct.bool(), rl_scale * torch.exp(H), torch.full_like(H, neg_adv))  # [B]
    rollout_tok = -A[:, None] * logp  # -A log pi   (rows that are rollouts)
    p = torch.exp(logp)
    demo_tok = -(p / (p + gamma)) * demo_adv[:, None] if demo_rl else torch.zeros_like(logp)
    d = is_demo[:, None].float()
    rl = wsum(d * demo_tok + (1 - d) * rollout_tok, m, w_rl)
    return sft + rl, {"sft_loss": sft.item(), "rl_loss": rl.item()}


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        ro, rewards = mixed_groups(self.module, self.tok, self.task, problems, c.group_size - 1, 1, c)
        dev = ro.mask.device
        is_demo = ro.forced.amax(-1)  # [B] 1 on the demonstration rows
        batch = to_batch(ro)
        batch.update(is_demo=is_demo, is_correct=correct(rewards).to(dev),
                     demo_adv=group_advantages(rewards, c.group_size, "none").to(dev),
                     w_sft=row_weights(ro.mask, is_demo),
                     w_rl=row_weights(ro.mask, torch.ones_like(is_demo), "constant", c.max_new_tokens),
                     w_tok=row_weights(ro.mask, torch.ones_like(is_demo)))
        on = 1 - is_demo
        return batch, {"reward": (rewards.to(dev) * on).sum().item() / on.sum().item(),
                       "completion_len": ro.mask.sum(-1).mean().item()}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, ent = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"],
                                      c.temperature, return_entropy=True)  # [b, T-1]
        loss, stats = srft_loss(logp, ent, micro["mask"], micro["is_demo"], micro["is_correct"],
                                micro["demo_adv"], micro["w_sft"], micro["w_rl"], c.sft_scale,
                                c.rl_scale, c.neg_adv, c.demo_rl, c.gamma)
        entropy = wsum(ent, micro["mask"], micro["w_tok"])
        return loss - c.entropy_coef * entropy, {**stats, "entropy": entropy.item()}
