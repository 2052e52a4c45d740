"""A learned scalar reward model r(x, y): an `AutoModelForSequenceClassification` (num_labels = 1)
on the policy's backbone, trained by reference_impls/methods/rm.py, loaded here for scoring.

Scoring layout (the same for training and use): `[left-padded prompt | completion + EOS,
right-padded]`, position ids from the attention mask, and the reward is the head's output at the
LAST REAL token (the EOS), as TRL's RewardTrainer does (it appends EOS and the sequence-
classification model pools the last non-pad token). We locate that token from the attention mask,
not from `pad_token_id`, so a tokenizer whose pad token equals its EOS still scores the EOS.

    rm = load_reward_model("runs/.../reward_model", "cpu")
    rm.score(["12+34="], ["46"])          # Tensor[B]
    f = reward_fn("runs/.../reward_model"); f(problem, "46") -> float
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from reference_impls.core.logprobs import position_ids
from reference_impls.core.lora import apply_lora, lora_spec
from reference_impls.core.sampling import prompt_completion_batch


def build_reward_model(policy: PreTrainedModel) -> PreTrainedModel:
    """A sequence-classification model (1 label) of the policy's architecture whose backbone is a
    copy of the policy's (the LM head is dropped; the scalar head `score` is freshly initialised).
    A LoRA policy (--lora): the backbone gets the same adapters (copied) and the head trains in full."""
    cfg = policy.config.__class__.from_dict(policy.config.to_dict())
    cfg.num_labels = 1
    rm = AutoModelForSequenceClassification.from_config(cfg)
    if (spec := lora_spec(policy)) is not None:  # same layout as the policy's backbone, adapters too
        rm = apply_lora(rm, spec, full=[head(rm)])
    rm.base_model.load_state_dict(policy.base_model.state_dict())  # strict: same backbone
    return rm.to(next(policy.parameters()).device)


def head(model: PreTrainedModel) -> torch.nn.Module:
    """The scalar head of a sequence-classification model (`score` for decoder LMs)."""
    return model.score if hasattr(model, "score") else model.classifier


def rewards(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """r at the last real token of each row.   input_ids, attention_mask [B, T] -> [B]"""
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                           position_ids=position_ids(attention_mask))
    h = out.last_hidden_state  # [B, T, H]
    T = attention_mask.shape[1]
    last = T - 1 - attention_mask.flip(-1).long().argmax(-1)  # [B] index of the last 1
    return head(model)(h[torch.arange(h.shape[0], device=h.device), last]).squeeze(-1).float()


class RewardModel:
    """A loaded reward model: `score(prompts, completions) -> Tensor[B]` (batched, no grad)."""

    def __init__(self, model: PreTrainedModel, tok, batch_size: int = 256):
        self.model, self.tok, self.batch_size = model.eval(), tok, batch_size
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str]) -> Tensor:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            b = prompt_completion_batch(self.tok, prompts[i : i + self.batch_size],
                                        completions[i : i + self.batch_size], self.device)
            out.append(rewards(self.model, b["input_ids"], b["attention_mask"]).cpu())
        return torch.cat(out) if out else torch.zeros(0)


def load_reward_model(path: str | Path, device: str | torch.device = "cpu") -> RewardModel:
    """A reward model folder written by rm.Algo.save_reward_model (any HF seq-cls folder works)."""
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).to(device)
    if model.config.num_labels != 1:
        raise ValueError(f"{path}: a reward model has one output (num_labels = 1), this has {model.config.num_labels}")
    return RewardModel(model, AutoTokenizer.from_pretrained(str(path)))


@lru_cache(maxsize=4)
def _cached(path: str, device: str) -> RewardModel:
    return load_reward_model(path, device)


def reward_fn(path: str | Path, device: str = "cpu"):
    """f(problem, completion) -> float: the reward model's score of (problem.prompt, completion)."""
    rm = _cached(str(Path(path).resolve()), str(device))

    def f(problem, completion: str) -> float:
        return rm.score([problem.prompt], [completion]).item()

    return f
