"""Step-DPO (Lai et al., arXiv 2406.18629): DPO at the granularity of one reasoning step. For a
problem x with expert steps s_1..s_n, find the first wrong step k of a wrong solution; then, given
the correct prefix s_<k = s_1..s_{k-1},
    chosen  s_win  = s_k            (the correct step)
    rejected s_lose = the wrong step
    L = -log sigma( beta [log pi(s_win | x, s_<k) - log ref(s_win | x, s_<k)]
                   - beta [log pi(s_lose | x, s_<k) - log ref(s_lose | x, s_<k)] )   (eq. 2)
on summed step log-probs, reference = the frozen starting policy.
Where the pairs come from (`rejected_source`):
  "policy" (default; the paper's in-distribution data): sample a full solution from the current
     policy; if the task's reward says it is wrong, its first step that differs from the expert's
     is the wrong step (this step "leads to a wrong answer"); if the sample is right or never
     deviates, fall back to the task's wrong completion for that problem.
  "task": the first step where task.wrong_completion(problem) departs from the expert steps.
The paper corrects the wrong step by sampling from the model until a continuation reaches the right
answer; here the expert step s_k is the correction (the task knows it), which is what
`solution_steps` provide. A step of a sample ends where the expert step s_k ends in kind: after the
first newline if s_k ends with one, else after len(s_k) characters. EOS follows a step only when it
ends the solution (s_k the last step; a sampled step that ends the sample).
Defaults: beta = 0.1 (DPO's default, ours; the paper tunes beta); T = 1; lr 3e-4, batch 32, 60
steps ours.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core.sampling import encode, pad_prompt_completion, sample
from reference_impls.core.train import Batch, TrainConfig, step_rng
from reference_impls.methods.dpo import dpo_loss, summed_logprobs

NEEDS = {"solution_steps", "verifiable_reward", "preference_pairs"}  # steps; the judge; wrong completions
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps
    batch_size: int = 32  # step pairs per step (one per problem)
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    beta: float = 0.1  # inverse temperature of the implicit reward
    rejected_source: Literal["policy", "task"] = "policy"  # wrong step: sampled from pi, or task.wrong_completion
    temperature: float = 1.0  # sampling temperature of the policy's solutions
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)


def step_dpo_loss(pi_win: Tensor, pi_lose: Tensor, ref_win: Tensor, ref_lose: Tensor, beta: float = 0.1,
                  *, num_pairs: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """DPO's sigmoid loss (eq. 2) on summed STEP log-probs [B] -> (loss, r_win [B], r_lose [B])."""
    return dpo_loss(pi_win, pi_lose, ref_win, ref_lose, beta, "sigmoid", num_pairs=num_pairs)


def first_wrong_step(steps: tuple[str, ...], text: str) -> tuple[int, str, bool] | None:
    """(k, the step of `text` at s_k's place, whether that step ends `text`) for the first expert
    step s_k that `text` does not reproduce after the shared prefix s_<k; None if it reproduces all."""
    pos = 0
    for k, s in enumerate(steps):
        if text.startswith(s, pos):
            pos += len(s)
            continue
        rest = text[pos:]
        if s.endswith("\n"):
            cut = rest.find("\n")
            step = rest if cut < 0 else rest[: cut + 1]
        else:
            step = rest[: len(s)]
        return k, step, pos + len(step) == len(text)
    return None


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.ref = copy.deepcopy(model).eval().requires_grad_(False)  # frozen ref = pi_0
        self.device = next(model.parameters()).device

    def step_pair(self, problem, wrong: str) -> tuple[str, str, bool, str, bool] | None:
        """(prefix prompt x + s_<k, s_k, s_k ends the solution, wrong step, it ends the text)."""
        steps = tuple(problem.steps)
        found = first_wrong_step(steps, wrong)
        if found is None:
            return None
        k, lose, lose_ends = found
        return problem.prompt + "".join(steps[:k]), steps[k], k == len(steps) - 1, lose, lose_ends

    def pairs_batch(self, pairs: list[tuple[str, str, bool, str, bool]]) -> Batch:
        """DPO's layout (chosen_*, rejected_*, ref_chosen, ref_rejected) with EOS only where a
        step ends its solution."""
        B, eos = len(pairs), self.tok.eos_token_id
        prompts = encode(self.tok, [p for p, *_ in pairs], prompt=True)
        ids = encode(self.tok, [w for _, w, _, _, _ in pairs] + [ls for _, _, _, ls, _ in pairs])
        ends = [e for _, _, e, _, _ in pairs] + [e for *_, e in pairs]
        comps = [c + [eos] * e for c, e in zip(ids, ends, strict=True)]
        both = pad_prompt_completion(prompts + prompts, comps, self.tok.pad_token_id, self.device)
        batch: Batch = {}
        for k, v in both.items():
            batch[f"chosen_{k}"], batch[f"rejected_{k}"] = v[:B], v[B:]
        with torch.no_grad():
            batch["ref_chosen"], batch["ref_rejected"] = summed_logprobs(self.ref, batch)
        return batch

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c, rng = self.cfg, step_rng(self.seed, step)
        problems = self.task.problems(c.batch_size, rng)
        samples: list[str | None] = [None] * len(problems)
        if c.rejected_source == "policy":
            ro = sample(self.module, self.tok, [p.prompt for p in problems], c.max_new_tokens, c.temperature)
            samples = [o if self.task.reward(p, o) < 1.0 else None
                       for p, o in zip(problems, ro.completions, strict=True)]
        pairs, from_policy = [], 0
        for p, o in zip(problems, samples, strict=True):
            pair = self.step_pair(p, o) if o is not None else None
            from_policy += pair is not None
            for _ in range(8):  # a wrong completion that reproduces every step is no pair: redraw
                if pair is not None:
                    break
                pair = self.step_pair(p, self.task.wrong_completion(p, rng))
            if pair is not None:
                pairs.append(pair)
        return self.pairs_batch(pairs), {"policy_pair_frac": from_policy / max(1, len(problems))}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        pc, pr = summed_logprobs(self.module, micro)  # [b], [b] summed step log-probs
        loss, rc, rr = step_dpo_loss(pc, pr, micro["ref_chosen"], micro["ref_rejected"], self.cfg.beta,
                                     num_pairs=totals["rows"])
        n = totals["rows"]
        return loss, {"reward_margin": ((rc - rr).sum() / n).item(),
                      "reward_accuracy": ((rc > rr).float().sum() / n).item()}

    @torch.no_grad()
    def evaluate(self, n: int = 200) -> dict[str, float]:
        """Held-out ID problems, step pairs from task.wrong_completion (the first step it gets wrong):
        step_preference_accuracy         share with r(s_win) > r(s_lose), r = beta log(pi/ref)
        step_policy_preference_accuracy  share with log pi(s_win) > log pi(s_lose)"""
        rng = random.Random(999)
        pairs = [q for p in self.task.eval_sets["in_distribution"][:n]
                 if (q := self.step_pair(p, self.task.wrong_completion(p, rng))) is not None]
        batch = self.pairs_batch(pairs)
        self.module.eval()
        pc, pr = summed_logprobs(self.module, batch)
        self.module.train()
        rc, rr = pc - batch["ref_chosen"], pr - batch["ref_rejected"]
        return {"step_preference_accuracy": (rc > rr).float().mean().item(),
                "step_policy_preference_accuracy": (pc > pr).float().mean().item()}
