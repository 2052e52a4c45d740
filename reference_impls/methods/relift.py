"""ReLIFT, Reinforcement Learning Interleaved with online Fine-Tuning (Ma et al., "Learning What
Reinforcement Learning Can't", arXiv 2506.07527): RL improves what the policy can already reach;
SFT teaches the hardest questions. Training is mostly GRPO; prompts on which all n rollouts fail
go into a buffer with their expert solutions, and whenever the buffer holds `buffer_size` of them
an SFT step on them is interleaved:
    GRPO step:  A_i = r_i - mean(r) over n rollouts,  l = -rho A,  sum / (B * L_max)
                buffer <- {(q, y*_q) : sum_i r_i = 0} + buffer              (newest first)
    SFT step:   (when |buffer| >= buffer_size) take the first buffer_size pairs:
                L = -mean_t log pi(y*_t) - c_H mean_t H_t                   (entropy bonus)
The buffer persists across steps and is saved with the checkpoint (extra_state), so a resumed
run is exact.
Official code (github.com/TheRoadQaQ/ReLIFT, relift/trainer.py, actor.py, examples/math-7b/
train.sh), followed: n = 8, sft_data_size = 128 (ours 16 for 8 prompts per step), one SFT epoch
over the taken pairs, SFT entropy coefficient 0.001, RL with grpo_use_std=False,
loss_remove_clip=True (-rho A, no clip) and entropy bonus 0.001, newly failed prompts put in
front of the buffer and the front taken. Differences:
  * the official loop runs the RL update and then, in the same iteration, the SFT update with its
    own AdamW (same lr, 1e-6); here the SFT update is the next optimizer step of the same AdamW,
    drawing no new prompts (so `steps` counts both kinds).
  * normaliser: with loss_remove_token_mean=True the official RL loss divides each micro-batch's
    token sum by L_max (max_response_length), not by its rows, while its entropy bonus and the
    SFT loss are token means; ours is sum / (B * L_max) over the whole batch (Dr. GRPO's
    constant, independent of micro-batching), the SFT step a whole-batch token mean.
  * updates per batch: train.sh samples 128 prompts, ppo_mini_batch_size 64 -> 2 RL optimizer
    steps per batch (sft_mini_batch_size = sft_data_size: 1 SFT step); ours 1 by default
    (updates_per_batch = 2 gives the count; pi_old is then stored and rho = pi / pi_old).
Under torchrun the buffer is one list on every rank (failures gathered in rank order, as one
process would buffer them) and an SFT step shards the taken pairs.
Defaults lr 3e-4, 60 steps, 8 prompts x 8 rollouts are ours for the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core import distributed
from reference_impls.core.hybrid import correct_counts, row_weights, sample_groups, to_batch, wsum
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import group_advantages
from reference_impls.core.sampling import expert_rollout
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward", "expert_solutions"}  # signals asked of the task (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps, GRPO and interleaved SFT steps together
    batch_size: int = 64  # rollouts per GRPO step = prompts x group_size
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    group_size: int = 8  # rollouts per prompt (official n = 8)
    buffer_size: int = 16  # failed prompts per SFT step (official sft_data_size 128)
    sft_entropy_coef: float = 0.001  # entropy bonus of the SFT step (official sft.entropy_coeff)
    entropy_coef: float = 0.001  # entropy bonus of the GRPO step (official entropy_coeff)
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def relift_loss(logp: Tensor, entropy: Tensor, mask: Tensor, advantages: Tensor, is_sft: Tensor,
                w: Tensor, entropy_coef: float, sft_entropy_coef: float, *,
                old_logp: Tensor | None = None) -> Tensor:
    """One step's loss, GRPO (is_sft = 0) or SFT (is_sft = 1); all rows of a step are one kind.
    logp, entropy, mask [B, T]; advantages, is_sft, w (row normalisers) [B]; old_logp [B, T]
    (pi_old; None: sg[logp], i.e. rho = 1 at the first update on a batch)."""
    s = is_sft[:, None].float()
    old = logp.detach() if old_logp is None else old_logp
    pg = -torch.exp(logp - old) * advantages[:, None]  # -rho A (no clip: loss_remove_clip)
    nll = -logp  # SFT: -log pi(y*_t)
    coef = s * sft_entropy_coef + (1 - s) * entropy_coef
    return wsum(s * nll + (1 - s) * pg - coef * entropy, mask, w)


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.buffer: list[tuple[str, str]] = []  # (prompt, expert solution), newest first

    def extra_state(self) -> dict:
        return {"buffer": [list(x) for x in self.buffer]}

    def load_extra_state(self, state: dict) -> None:
        self.buffer = [tuple(x) for x in state.get("buffer", [])]

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        dev = next(self.module.parameters()).device
        if len(self.buffer) >= c.buffer_size:  # interleaved SFT step on the hardest prompts
            pairs, self.buffer = self.buffer[: c.buffer_size], self.buffer[c.buffer_size :]
            pairs = distributed.shard(pairs, "buffered prompts")  # torchrun: this rank's share
            ro = expert_rollout(self.tok, [p for p, _ in pairs], [s for _, s in pairs], dev)
            batch = to_batch(ro)
            ones = torch.ones(len(ro), device=dev)
            batch.update(advantages=torch.zeros_like(ones), is_sft=ones, w=row_weights(ro.mask, ones))
            return batch, {"sft_step": 1.0, "buffer": float(len(self.buffer))}
        problems = self.task.prompts(c.batch_size // c.group_size, step_rng(self.seed, step))
        ro, rewards = sample_groups(self.module, self.tok, self.task, problems, c.group_size, c)
        failed = (correct_counts(rewards, c.group_size) == 0).tolist()  # every rollout wrong
        new = [(p.prompt, p.solution) for p, f in zip(problems, failed, strict=True) if f]
        # one buffer on every rank (torchrun): the ranks' failures in rank order = one process's
        self.buffer = [x for part in distributed.gather_objects(new) for x in part] + self.buffer
        batch = to_batch(ro)
        zeros = torch.zeros(len(ro), device=dev)
        batch.update(advantages=group_advantages(rewards, c.group_size, "none").to(dev), is_sft=zeros,
                     w=row_weights(ro.mask, torch.ones_like(zeros), "constant", c.max_new_tokens))
        if c.updates_per_batch > 1:  # pi_old differs from pi_theta after the first update
            batch["old_logp"] = sequence_logprobs(self.module, ro.input_ids, ro.attention_mask,
                                                  c.temperature)
        return batch, {"sft_step": 0.0, "reward": rewards.mean().item(),
                       "buffer": float(len(self.buffer)), "failed_prompts": sum(failed) / len(failed)}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, ent = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"],
                                      c.temperature, return_entropy=True)  # [b, T-1]
        return relift_loss(logp, ent, micro["mask"], micro["advantages"], micro["is_sft"],
                           micro["w"], c.entropy_coef, c.sft_entropy_coef,
                           old_logp=micro.get("old_logp")), {}
