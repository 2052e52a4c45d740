"""Batched sampling with a KV cache (`model.generate`) from left-padded prompts, and batching helpers.

Layout of a sampled batch: `[left-padded prompt | completion right-padded after its EOS]`.
Re-scoring it must use position ids from the attention mask (`logprobs.position_ids`), as
`generate()` does, or the log-probs are off-policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import GenerationConfig


def adds_bos(tok) -> bool:
    """Whether the tokenizer puts BOS in front of a text it encodes with special tokens (Llama,
    Gemma: yes; GPT-2, Qwen2: no). Probed, since transformers 5 reports `add_bos_token` False for
    tokenizers whose post-processor adds it."""
    bos = tok.bos_token_id
    if bos is None:
        return False
    with_special = tok("a", add_special_tokens=True)["input_ids"]
    return with_special[:1] == [bos] and tok("a", add_special_tokens=False)["input_ids"][:1] != [bos]


def encode(tok, texts: list[str], prompt: bool = False) -> list[list[int]]:
    """Token ids of each text (one batched tokenizer call). No special tokens, except BOS in front
    of prompts for tokenizers that add it (`adds_bos`, e.g. Llama/Gemma checkpoints), as TRL's
    trainers get by tokenizing prompts with special tokens."""
    ids = tok(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    if prompt and ids and adds_bos(tok):
        bos = tok.bos_token_id
        ids = [s if s[:1] == [bos] else [bos, *s] for s in ids]
    return ids


def left_pad(seqs: list[list[int]], pad_id: int, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """Left-pad to a [B, P] batch; returns (ids [B, P], attention mask [B, P])."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
    return ids.to(device), mask.to(device)


def right_pad(seqs: list[list[int]], pad_id: int, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """Right-pad to a [B, T] batch; returns (ids [B, T], mask [B, T])."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long)
    return ids.to(device), mask.to(device)


def prompt_completion_batch(tok, prompts: list[str], completions: list[str], device="cpu",
                            add_eos: bool = True) -> dict[str, Tensor]:
    """Teacher-forced batch `[left-padded prompt | completion + EOS, right-padded]`.
    Returns input_ids [B, T], attention_mask [B, T] and completion mask `mask` [B, T-1] aligned with
    `token_logprobs` output (1 where the scored token is a completion token)."""
    eos = [tok.eos_token_id] if add_eos else []
    return pad_prompt_completion(encode(tok, prompts, prompt=True), [c + eos for c in encode(tok, completions)],
                                 tok.pad_token_id, device)


def pad_prompt_completion(prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                          device="cpu") -> dict[str, Tensor]:
    """`prompt_completion_batch` on token ids (completions already end with EOS if wanted)."""
    p_ids, p_mask = left_pad(prompts, pad_id, device)  # [B, P]
    c_ids, c_mask = right_pad(completions, pad_id, device)  # [B, C]
    input_ids = torch.cat([p_ids, c_ids], 1)  # [B, P+C]
    attention_mask = torch.cat([p_mask, c_mask], 1)  # [B, P+C]
    mask = torch.cat([torch.zeros_like(p_mask), c_mask], 1)[:, 1:]  # [B, T-1], shifted
    return {"input_ids": input_ids, "attention_mask": attention_mask, "mask": mask.float()}


@dataclass
class Rollout:
    """Completions of a batch of prompts, laid out `[left-padded prompt region | right-padded
    completion region]`. `mask` marks every completion token (sampled or not); `forced` marks the
    completion tokens the policy did NOT sample (an expert prefix or a whole expert solution:
    off-policy tokens for the hybrids), all zeros for plain sampling. `completions` is the text of
    the whole completion (forced prefix included)."""

    input_ids: Tensor  # [B, P+C] prompt (left-padded) + completion (right-padded after EOS)
    attention_mask: Tensor  # [B, P+C]
    mask: Tensor  # [B, P+C-1] float: 1 where the scored token is a completion token
    completions: list[str]  # decoded completions, EOS and padding removed
    prompt_len: int  # P: width of the prompt region (forced prefixes sit at its right end)
    forced: Tensor | None = None  # [B, P+C-1] float: 1 where the completion token was not sampled

    def __post_init__(self):
        if self.forced is None:
            self.forced = torch.zeros_like(self.mask)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def expert_rollout(tok, prompts: list[str], completions: list[str], device="cpu") -> Rollout:
    """A Rollout of given completions (teacher forcing, + EOS): every completion token is forced."""
    b = prompt_completion_batch(tok, prompts, completions, device)
    P = int(b["attention_mask"].shape[1] - max(len(c) + 1 for c in encode(tok, completions)))
    return Rollout(b["input_ids"], b["attention_mask"], b["mask"], list(completions), P, b["mask"].clone())


def cat_rollouts(rollouts: list[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts with different prompt/completion widths into one, re-padding both regions
    (prompt region on the left, completion region on the right).   rows: sum of the inputs' rows"""
    P = max(r.prompt_len for r in rollouts)
    C = max(r.input_ids.shape[1] - r.prompt_len for r in rollouts)
    parts: dict[str, list[Tensor]] = {"ids": [], "am": [], "mask": [], "forced": []}
    for r in rollouts:
        lp, rp = P - r.prompt_len, C - (r.input_ids.shape[1] - r.prompt_len)
        zero = torch.zeros_like(r.mask[:, :1])

        def pad(x: Tensor, value, lp=lp, rp=rp) -> Tensor:
            return torch.nn.functional.pad(x, (lp, rp), value=value)

        parts["ids"].append(pad(r.input_ids, pad_id))
        parts["am"].append(pad(r.attention_mask, 0))
        # masks are shifted by one (position t scores token t+1): unshift, pad, shift back
        parts["mask"].append(pad(torch.cat([zero, r.mask], 1), 0)[:, 1:])
        parts["forced"].append(pad(torch.cat([zero, r.forced], 1), 0)[:, 1:])
    return Rollout(torch.cat(parts["ids"]), torch.cat(parts["am"]), torch.cat(parts["mask"]),
                   [c for r in rollouts for c in r.completions], P, torch.cat(parts["forced"]))


def cache_choice(cache_implementation: str | None, device: torch.device, fsdp: bool = False) -> str | None:
    """The KV cache `sample` uses: the caller's choice; if none, "static" on CUDA (not under FSDP,
    whose ranks step in lockstep) and the dynamic cache (None) elsewhere."""
    if cache_implementation is None and torch.device(device).type == "cuda" and not fsdp:
        return "static"
    return cache_implementation


@torch.no_grad()
def sample(model, tok, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
           top_p: float = 1.0, greedy: bool = False, cache_implementation: str | None = None,
           prefixes: list[str] | None = None) -> Rollout:
    """Sample one completion per prompt with the KV cache; stops at EOS (top_k disabled).
    `prefixes`: a forced start of each completion (an expert prefix / hint; "" for none): the
    policy continues after it, the prefix counts as completion tokens and is marked `forced`.
    `cache_implementation="static"`: a fixed-shape cache; on CUDA transformers then compiles the
    decode step (CUDA graphs), which the environment notes measured ~4.8x faster for generation
    after a one-off compile (untested here on GPU); results equal the dynamic cache.
    None (the default) picks "static" on CUDA (except under FSDP) and the dynamic cache elsewhere;
    "dynamic" asks for the dynamic cache everywhere.
    Under FSDP (core/distributed.py) every rank runs decode steps until all ranks are done
    (`synced_gpus`), since each forward all-gathers the sharded weights."""
    from reference_impls.core import distributed

    device = next(model.parameters()).device
    fsdp = distributed.active() and distributed.is_fsdp(model)
    cache_implementation = cache_choice(cache_implementation, device, fsdp)
    p_tok = encode(tok, prompts, prompt=True)
    f_tok = encode(tok, prefixes) if prefixes is not None else [[] for _ in prompts]
    f_len = torch.tensor([len(f) for f in f_tok], device=device)  # [B] forced-prefix lengths
    p_ids, p_mask = left_pad([p + f for p, f in zip(p_tok, f_tok, strict=True)], tok.pad_token_id, device)  # [B, P]
    kw = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature,
                                                     top_p=top_p, top_k=0)
    was_training, saved_cfg = model.training, model.generation_config
    model.eval()
    # A checkpoint's saved generation_config (repetition_penalty, top_k, min_length, ...) would
    # reshape the distribution: sample from plain softmax(logits / T), the one that is scored.
    model.generation_config = GenerationConfig()
    try:
        out = model.generate(input_ids=p_ids, attention_mask=p_mask, max_new_tokens=max_new_tokens,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             cache_implementation=cache_implementation,
                             synced_gpus=fsdp, **kw)
    finally:
        model.generation_config = saved_cfg
        model.train(was_training)
    P = p_ids.shape[1]
    comp = out[:, P:]  # [B, C]
    is_eos = comp == tok.eos_token_id
    # keep tokens up to and including the first EOS: count of EOS strictly before position t == 0
    before = torch.cumsum(is_eos.long(), -1) - is_eos.long()  # [B, C]
    c_mask = (before == 0).long()  # [B, C]
    comp = torch.where(c_mask.bool(), comp, torch.full_like(comp, tok.pad_token_id))
    texts = []
    for row, m, f in zip(comp.tolist(), c_mask.tolist(), f_tok, strict=True):
        ids = [t for t, k in zip(row, m, strict=True) if k and t != tok.eos_token_id]
        texts.append(tok.decode(f + ids, skip_special_tokens=True))
    input_ids = torch.cat([p_ids, comp], 1)  # [B, P+C]
    attention_mask = torch.cat([p_mask, c_mask], 1)  # [B, P+C]
    in_prefix = (torch.arange(P, device=device) >= P - f_len[:, None]).long()  # [B, P] forced prefix
    forced = torch.cat([in_prefix, torch.zeros_like(c_mask)], 1)[:, 1:].float()  # [B, P+C-1]
    mask = torch.cat([in_prefix, c_mask], 1)[:, 1:].float()  # [B, P+C-1]
    return Rollout(input_ids, attention_mask, mask, texts, P, forced)
