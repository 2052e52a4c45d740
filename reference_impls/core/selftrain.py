"""Shared machinery of the self-training / rejection-sampling fine-tuning methods (STaR, RFT, RAFT,
ReST, ReST-EM): sample k completions per prompt from the current policy, score them with the task's
reward, keep some (each method's selection rule), and fine-tune on the kept ones with the SFT loss

    L(theta) = - 1/N sum_{i,t} m_{i,t} log pi_theta(y_{i,t} | x_i, y_{i,<t})    (token mean, as sft.py)

The training loop sees one optimizer step per `collect`. Here the run is cut into *iterations*:
iteration n lasts round(iteration_steps * iteration_growth^n) optimizer steps; at its first step
`collect` regenerates the iteration's dataset with the current policy (the method's `build`), and
(if `reset_each_iteration`) then reloads the start weights into the module in place ("fine-tune
from the base each iteration"). Every step draws an SFT minibatch from the dataset in epoch order
(a fresh shuffle each epoch, a function of (seed, iteration, epoch)).

Optimizer: the AdamW moments and step count CARRY OVER across a weight reset (core/train.py owns
the optimizer and offers no hook to reset it); the papers restart fine-tuning with a fresh one.
Resume is exact: the iteration's dataset (texts) and any method state are in `extra_state()`.
An empty dataset (nothing passed the filter) gives a step with zero loss and zero gradient.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.losses import sft_loss
from reference_impls.core.sampling import prompt_completion_batch, sample
from reference_impls.core.train import Batch, TrainConfig, step_rng


@dataclass
class SelfTrainConfig(TrainConfig):
    steps: int = 60  # optimizer steps of the stage (all iterations together)
    batch_size: int = 64  # rows (kept completions) per SFT minibatch
    lr: float = 1e-3  # peak learning rate (AdamW)
    prompts_per_iteration: int = 256  # problems sampled to build each iteration's dataset
    samples_per_prompt: int = 4  # completions sampled per problem (k)
    iteration_steps: int = 10  # optimizer steps of the first iteration (0: one iteration, the whole run)
    iteration_growth: float = 1.0  # each iteration has this many times the steps of the previous one
    reset_each_iteration: bool = False  # reload the start weights at each new iteration (not the optimizer)
    success: float = 1.0  # a completion is correct when its reward is >= this
    temperature: float = 1.0  # sampling temperature of the generation phase
    top_p: float = 1.0  # nucleus sampling of the generation phase
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def iteration_at(step: int, first: int, growth: float = 1.0) -> tuple[int, int]:
    """(iteration index, its first step) of optimizer step `step`; `first` = 0: one iteration."""
    if first <= 0:
        return 0, 0
    it, start, length = 0, 0, float(first)
    while step >= start + max(1, round(length)):
        start += max(1, round(length))
        it, length = it + 1, length * growth
    return it, start


def sample_and_score(model, tok, task, problems: list, k: int, cfg: SelfTrainConfig,
                     prompts: list[str] | None = None) -> list[list[tuple[str, float]]]:
    """k completions of each problem's prompt (or of `prompts`, e.g. with a hint) from `model`,
    scored with task.reward(problem, completion).   -> [n_problems][k] (completion, reward)"""
    prompts = prompts if prompts is not None else [p.prompt for p in problems]
    if not problems:
        return []
    idx = [i for i in range(len(problems)) for _ in range(k)]  # k consecutive copies
    ro = sample(model, tok, [prompts[i] for i in idx], cfg.max_new_tokens, cfg.temperature,
                cfg.top_p, cache_implementation=cfg.sampler_cache)
    scored = [(c, float(task.reward(problems[i], c))) for i, c in zip(idx, ro.completions, strict=True)]
    return [scored[i * k : (i + 1) * k] for i in range(len(problems))]


@lru_cache(maxsize=64)
def _perm(n: int, key: str) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(key).shuffle(order)  # a str seed is hashed with sha512: stable across processes
    return tuple(order)


def epoch_rows(n: int, batch_size: int, position: int, key: str) -> list[int]:
    """Rows of minibatch number `position` (0-based within the iteration) when the n rows are
    visited epoch by epoch, each epoch in a fresh order (a function of `key` and the epoch)."""
    out = []
    for j in range(position * batch_size, (position + 1) * batch_size):
        epoch, r = divmod(j, n)
        out.append(_perm(n, f"{key}-{epoch}")[r])
    return out


class SelfTrainAlgo:
    """Base Algo: a method subclasses it and implements `build(iteration, rng)` -> (kept
    [(prompt, completion)], stats), sampling with `self.module` (the current policy)."""

    def __init__(self, model, tok, task, cfg: SelfTrainConfig, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.device = next(model.parameters()).device
        self.start_state = ({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                            if cfg.reset_each_iteration else None)
        self.data: list[tuple[str, str]] = []  # the current iteration's kept (prompt, completion)
        self.iteration, self.first_step = -1, 0
        self.data_stats: dict[str, float] = {}
        self.state: dict = {}  # JSON-able method state kept across iterations (e.g. ReST's pool)

    def build(self, iteration: int, rng: random.Random) -> tuple[list[tuple[str, str]], dict[str, float]]:
        raise NotImplementedError

    def sample_and_score(self, problems, k: int | None = None, prompts=None):
        return sample_and_score(self.module, self.tok, self.task, problems,
                                k or self.cfg.samples_per_prompt, self.cfg, prompts)

    def reset_weights(self) -> None:
        """Fine-tune from the base: copy the start weights into the module (same Parameters)."""
        self.module.load_state_dict(self.start_state)

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c = self.cfg
        it, first = iteration_at(step, c.iteration_steps, c.iteration_growth)
        if it != self.iteration:  # a new iteration: generate with the current policy, then reset
            self.data, stats = self.build(it, step_rng(self.seed, step))
            self.iteration, self.first_step = it, first
            self.data_stats = {"iteration": float(it), "kept": float(len(self.data)), **stats}
            if self.start_state is not None and it > 0:
                self.reset_weights()
        if self.data:
            rows = [self.data[i] for i in epoch_rows(len(self.data), c.batch_size, step - first,
                                                     f"{self.seed}-{it}")]
            batch = prompt_completion_batch(self.tok, [p for p, _ in rows], [y for _, y in rows],
                                            self.device)
        else:  # nothing kept: one row with no completion token (zero loss, zero gradient)
            batch = prompt_completion_batch(self.tok, ["0"], [""], self.device)
            batch["mask"].zero_()
        return batch, dict(self.data_stats)

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        logp = sequence_logprobs(self.module, micro["input_ids"], micro["attention_mask"])  # [b, T-1]
        n_tok = torch.clamp(torch.as_tensor(totals["tokens"], dtype=logp.dtype), min=1.0)
        return sft_loss(logp, micro["mask"], total_tokens=n_tok), {}

    def extra_state(self) -> dict:
        return {"data": [list(r) for r in self.data], "iteration": self.iteration,
                "first_step": self.first_step, "data_stats": self.data_stats, "state": self.state}

    def load_extra_state(self, extra: dict) -> None:
        if not extra:
            return
        self.data = [(p, y) for p, y in extra["data"]]
        self.iteration, self.first_step = extra["iteration"], extra["first_step"]
        self.data_stats, self.state = extra["data_stats"], extra["state"]
