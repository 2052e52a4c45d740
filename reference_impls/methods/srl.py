"""SRL: Supervised Reinforcement Learning, from expert trajectories to step-wise reasoning
(Deng, Hsu, Yan, ..., Pfister, Lee, arXiv 2510.25992).

The expert solution is a sequence of actions (its steps) y* = (a*_1, ..., a*_N). Each training
instance is one step k: the context is the question plus the expert's previous steps a*_{<k},
the policy writes (an optional inner monologue, then) its own action a_k, and the dense reward
is the sequence similarity of that action to the expert's:
    r = 2 M / T                (difflib.SequenceMatcher(None, a_k, a*_k).ratio(): M matched
                                characters in the matching blocks, T = |a_k| + |a*_k|)
    r = -1                     if a monologue is asked for and the output lacks its closing tag
followed by GRPO on that reward over G rollouts of the same instance (methods/grpo.py).
Monologue: optional. With think_close = "" (default; the tiny preset has no room for one) the
whole written action is the action; with think_close = "</think>" (paper) the action is the
text after the tag and `monologue_tokens` more tokens are allowed. The reward reads the action
part only. Action window: the policy writes at most |a*_k| tokens (+ the monologue budget, + 1
for EOS after the solution's last step): the tokens of the action slot; later tokens are cut
and not trained, so the model keeps writing whole solutions after training (no per-step stop).
k is drawn uniformly per prompt (shared by its group). We found no official code; the reward
(2M/T via difflib, -1 for a format failure) and GRPO follow the paper's text as summarised in
public descriptions. The paper's dynamic sampling (drop groups whose reward std is ~0, refill)
is not done: such groups get zero advantage. GRPO defaults from methods/grpo.py; lr 1e-4,
100 steps, 8 prompts x 8 rollouts are ours: at lr 3e-4 (our GRPO default) exact match falls on
the tiny preset (weak 26.5 % base, 60 steps, seed 0: 0.205), at 1e-4 it rises (0.380; seeds 1,
2: 0.360, 0.345).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

import torch
from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import AggregationMode, group_advantages, grpo_loss
from reference_impls.core.prefix import policy_mask, rollout_batch, step_prefix
from reference_impls.core.sampling import encode, sample
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"expert_solutions", "solution_steps"}  # no verifier: the reward compares with expert steps
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps
    batch_size: int = 64  # rollouts per step = step instances x group_size
    lr: float = 1e-4  # peak learning rate (ours, tiny preset: 3e-4 overshoots)
    group_size: int = 8  # G rollouts per step instance
    think_close: str = ""  # tag that ends the monologue ("</think>" in the paper; "": no monologue)
    monologue_tokens: int = 0  # extra tokens allowed for the monologue
    format_penalty: float = -1.0  # reward when the monologue tag is missing (paper: -1)
    eps_low: float = 0.2  # clip range below 1
    eps_high: float = 0.2  # clip range above 1
    beta: float = 0.04  # k3 KL to the reference (GRPO default; 0 drops the reference)
    aggregation: AggregationMode = "seq-mean-token-mean"  # token-loss averaging (core/losses.aggregate)
    scale: Literal["std", "none"] = "std"  # advantage: (r - mean)/std | r - mean
    temperature: float = 1.0  # sampling temperature
    max_new_tokens: int = 6  # kept for the runner; the action window sets the real budget


def similarity(action: str, expert: str) -> float:
    """2M / T, M = matched characters (SequenceMatcher's matching blocks), T = total length."""
    return SequenceMatcher(None, action, expert).ratio()


def srl_reward(output: str, expert: str, think_close: str = "", format_penalty: float = -1.0) -> float:
    """Similarity of the action part of `output` to the expert action."""
    if think_close:
        if think_close not in output:
            return format_penalty
        output = output.split(think_close)[-1]
    return similarity(output, expert)


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c, G = self.cfg, self.cfg.group_size
        rng = step_rng(self.seed, step)
        problems = self.task.prompts(c.batch_size // G, rng)
        ks = [rng.randrange(len(p.steps)) for p in problems]  # the step to write
        targets = [p.steps[k] for p, k in zip(problems, ks, strict=True)]
        window = [len(ids) + (k == len(p.steps) - 1) + c.monologue_tokens  # + EOS after the last step
                  for ids, k, p in zip(encode(self.tok, targets), ks, problems, strict=True)]
        ro = sample(self.module, self.tok, [p.prompt for p in problems for _ in range(G)], max(window),
                    c.temperature, prefixes=[step_prefix(p.steps, k) for p, k in zip(problems, ks, strict=True)
                                             for _ in range(G)])
        win = torch.tensor([w for w in window for _ in range(G)], device=ro.mask.device)  # [N]
        P = ro.prompt_len
        col = torch.arange(ro.mask.shape[1], device=ro.mask.device)  # mask column j scores token j+1
        in_window = (col[None] - (P - 1) < win[:, None]).float()  # completion token c = column P-1+c
        mask = policy_mask(ro) * in_window  # [N, T-1] the action slot's sampled tokens
        comp = ro.input_ids[:, P:]  # [N, C]
        texts = [self.tok.decode([t for t, m in zip(row, mrow, strict=True) if m], skip_special_tokens=True)
                 for row, mrow in zip(comp.tolist(), mask[:, P - 1:].long().tolist(), strict=True)]
        rewards = torch.tensor([srl_reward(o, targets[i // G], c.think_close, c.format_penalty)
                                for i, o in enumerate(texts)])
        batch = rollout_batch(ro, mask, advantages=group_advantages(rewards, G, c.scale).to(mask.device))
        if self.ref is not None:
            batch["ref_logp"] = self._logp(self.ref, batch)
        if c.updates_per_batch > 1:
            batch["old_logp"] = self._logp(self.module, batch)
        exact = sum(o == targets[i // G] for i, o in enumerate(texts)) / len(texts)
        return batch, {"reward": rewards.mean().item(), "step_exact": exact}

    def _logp(self, model, b: Batch) -> Tensor:
        return sequence_logprobs(model, b["input_ids"], b["attention_mask"], self.cfg.temperature)

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        logp = self._logp(self.module, micro)  # [n, T-1]
        old = micro.get("old_logp", logp.detach())
        return grpo_loss(logp, old, micro["advantages"], micro["mask"], micro.get("ref_logp"),
                         c.eps_low, c.eps_high, c.beta, c.aggregation, max(1, c.max_new_tokens),
                         total_tokens=totals["tokens"], total_seqs=totals["rows"])
