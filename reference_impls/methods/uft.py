"""UFT: Unifying Supervised and Reinforcement Fine-Tuning (Liu, Farina, Ozdaglar, arXiv 2505.16984).

RL on (question + hint): the hint h = the first steps of the expert solution, appended to the
prompt; the policy continues after it and the reward scores hint + continuation. Its length
is annealed to 0 over T_hint steps, and the hint's log-likelihood is added to the objective:
    p(t) = p_low + (p_high - p_low) (1 + cos(pi t / T_hint)) / 2  for t <= T_hint, else 0
    n ~ Binomial(K, p(t)),  K = min(5, #steps) chunks;  h = steps[: cut_n]   (cut_n = round(n/K * #steps))
    L = L_GRPO(o | q, h) + lambda * NLL(h | q) - c_H * H(o) + beta * KL(o)
with L_GRPO the clipped group-advantage surrogate on the sampled tokens only (the G rollouts of
a prompt share its hint), NLL(h) the mean negative log-likelihood of the hint tokens (the SFT
part: "maximise E[r] + lambda log pi(h | q)"), H the entropy bonus and KL the k3 ("low_var_kl")
penalty to the reference, all token means over the whole batch.
Paper vs official code (github.com/liumy2010/UFT, verl/utils/dataset/rl_dataset.py,
verl/workers/actor/dp_actor.py, run.py), official followed:
  * the paper draws l ~ Binomial(L, p(t)) over the whole solution length with p((t+1)/T_hint);
    the code draws the number of hint CHUNKS from Binomial(min(5, #steps), p(t)), the solution's
    steps cut into min(5, #steps) near-equal chunks, and uses t/T_hint (hint 0 once t > T_hint).
    paper_hint=True draws l ~ Binomial(#steps, p(t + 1)) steps, 0 from t >= T_hint.
  * the code's NLL is a token mean per micro-batch; ours is over the whole batch's hint tokens
    (micro-batching does not change it).
  * the code (scripts/train.sh) samples 256 prompts per batch and takes 4 optimizer steps on
    mini-batches of 64 prompts; ours takes one step per collected batch (updates_per_batch 1).
Official defaults: p_high 0.95, p_low 0.05, T_hint 300 of T 500 steps (so hint_frac 0.6),
lambda (sft_loss_coef) 0.001, GRPO advantages, 4 rollouts per prompt, clip 0.2, entropy_coeff
0.001, KL 0.001 (low_var_kl), token-mean. lr 1e-4, 100 steps, 16 prompts x 4 rollouts are ours:
at lr 3e-4 (our GRPO default) exact match falls on the tiny preset (weak 26.5 % base, 60 steps:
0.240 seed 0, 0.225 seed 1; 0.245 without hints), at 1e-4 it rises (0.415; seeds 1, 2: 0.385).
Those runs drew hints from the step RNG; since 2026-12-05 each prompt's hint is drawn from
(seed, step, prompt), the same on any rank under torchrun: seed 0 at 1e-4 then gives 0.380.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch
from torch import Tensor

from reference_impls.core import distributed
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import aggregate, group_advantages, grpo_loss
from reference_impls.core.prefix import expert_mask, policy_mask, rollout_batch, step_prefix
from reference_impls.core.sampling import sample
from reference_impls.core.schedules import cosine
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward", "expert_solutions", "solution_steps"}  # signals asked of the task
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps
    batch_size: int = 64  # rollouts per step = prompts x group_size
    lr: float = 1e-4  # peak learning rate (ours, tiny preset: 3e-4 overshoots; official 1e-6)
    group_size: int = 4  # rollouts per prompt (official n_rollouts 4)
    hint_frac: float = 0.6  # T_hint as a fraction of steps (official T_hint 300 of T 500)
    p_high: float = 0.95  # hint proportion at step 0 (official upper_prob)
    p_low: float = 0.05  # hint proportion at T_hint (official lower_prob)
    max_chunks: int = 5  # hint granularity: the steps cut into min(max_chunks, #steps) chunks
    paper_hint: bool = False  # paper's rule: l ~ Binomial(#steps, p(t + 1)), no chunks
    sft_coef: float = 0.001  # lambda: weight of the hint NLL (official sft_loss_coef)
    entropy_coef: float = 0.001  # entropy bonus on sampled tokens (official entropy_coeff)
    beta: float = 0.001  # k3 KL to the reference (official kl_loss_coef, low_var_kl)
    eps: float = 0.2  # clip range (official clip_ratio)
    temperature: float = 1.0  # sampling temperature
    max_new_tokens: int = 6  # completion budget after the hint (the runner sets the task's)


def hint_prob(step: int, t_hint: int, p_high: float = 0.95, p_low: float = 0.05,
              paper: bool = False) -> float:
    """p(t) = p_low + (p_high - p_low)(1 + cos(pi t / T_hint)) / 2 for t <= T_hint, else 0
    (official); the paper uses t + 1 and stops at t >= T_hint."""
    if paper:
        return cosine(step + 1, t_hint, p_high, p_low) if step < t_hint else 0.0
    return cosine(step, t_hint, p_high, p_low) if step <= t_hint else 0.0


def hint_steps(n_steps: int, p: float, rng: random.Random, max_chunks: int = 5,
               paper: bool = False) -> int:
    """How many expert steps the hint holds: Binomial(K, p) chunks of the steps, K =
    min(max_chunks, n_steps), chunk boundaries round(i / K * n_steps) (official); paper:
    Binomial(n_steps, p) steps."""
    if paper:
        return sum(rng.random() < p for _ in range(n_steps))
    K = min(max_chunks, n_steps)
    cuts = [round(i / K * n_steps) for i in range(K + 1)] if K else [0]
    cuts[-1] = n_steps
    return cuts[sum(rng.random() < p for _ in range(K))]


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        rng = step_rng(self.seed, step)
        problems = self.task.prompts(c.batch_size // c.group_size, rng)
        p = hint_prob(step, round(c.hint_frac * c.steps), c.p_high, c.p_low, c.paper_hint)
        # one hint per prompt, shared by its group; its draw is a function of (seed, step, prompt),
        # so a prompt gets the same hint whichever rank holds it (torchrun)
        rngs = [random.Random(f"{self.seed}:{step}:{q.prompt}") for q in problems]
        hints = [step_prefix(q.steps, hint_steps(len(q.steps), p, r, c.max_chunks, c.paper_hint))
                 for q, r in zip(problems, rngs, strict=True)]
        group = [q for q in problems for _ in range(c.group_size)]
        ro = sample(self.module, self.tok, [q.prompt for q in group], c.max_new_tokens, c.temperature,
                    prefixes=[h for h in hints for _ in range(c.group_size)])
        rewards = torch.tensor([self.task.reward(q, o) for q, o in zip(group, ro.completions, strict=True)])
        hint = expert_mask(ro)
        batch = rollout_batch(ro, policy_mask(ro), hint_mask=hint,
                              advantages=group_advantages(rewards, c.group_size, "std").to(ro.mask.device),
                              n_hint=distributed.all_sum(hint.sum()).expand(len(ro)))  # every rank's hint tokens
        if self.ref is not None:
            batch["ref_logp"] = self._logp(self.ref, batch)
        if c.updates_per_batch > 1:
            batch["old_logp"] = self._logp(self.module, batch)
        return batch, {"reward": rewards.mean().item(), "hint_prob": p,
                       "hint_tokens": hint.sum().item() / len(ro)}

    def _logp(self, model, b: Batch) -> Tensor:
        return sequence_logprobs(model, b["input_ids"], b["attention_mask"], self.cfg.temperature)

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp, ent = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"],
                                      c.temperature, return_entropy=True)  # [n, T-1]
        old = micro.get("old_logp", logp.detach())
        pg, stats = grpo_loss(logp, old, micro["advantages"], micro["mask"], micro.get("ref_logp"),
                              c.eps, c.eps, c.beta, "token-mean", total_tokens=totals["tokens"])
        nll = uft_hint_nll(logp, micro["hint_mask"], micro["n_hint"][0])  # -mean log pi(h | q)
        entropy = aggregate(ent, micro["mask"], "token-mean", total_tokens=totals["tokens"])
        loss = pg + c.sft_coef * nll - c.entropy_coef * entropy  # L_GRPO + lambda NLL(h) - c_H H
        return loss, {**stats, "hint_nll": nll.item(), "entropy": entropy.item()}


def uft_hint_nll(logp: Tensor, hint_mask: Tensor, n_hint: Tensor | float) -> Tensor:
    """-sum(hint_mask * log pi) / n_hint (0 when no hint token): logp, hint_mask [B, T]."""
    return -(logp * hint_mask).sum() / max(float(n_hint), 1.0)
