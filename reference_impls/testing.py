"""Shared helpers for the reference-implementation tests (tests/test_ref_*.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an accidental hub call fails fast

import torch  # noqa: E402

# The tiny preset is too small to gain from intra-op threads: on 2 shared cores, 1 thread measured
# 2.7 s per 100 SFT steps, 2 threads 3.5-34 s (OpenMP spinning against a noisy neighbour).
torch.set_num_threads(int(os.environ.get("SFTRL_TEST_THREADS", "1")))

from reference_impls.core.model import load_model  # noqa: E402
from reference_impls.core.train import seed_everything  # noqa: E402
from reference_impls.runner import METHODS  # noqa: E402
from reference_impls.tasks.addition import Addition  # noqa: E402
from reference_impls.tasks.base_model import warm_start  # noqa: E402


def make_algo(method: str, seed: int = 0, base: bool = False, task=None, **cfg):
    """A method's Algo on the tiny preset (or the warm-start base of addition), seeded, on `task`
    (default: addition; e.g. `Addition(cot=True)`)."""
    mod = METHODS[method]
    seed_everything(seed)
    model, tok = load_model(str(warm_start()) if base else "tiny")
    seed_everything(seed)
    return mod.Algo(model, tok, task or Addition(), mod.Config(**cfg), seed=seed)


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------- the parity tests' tiny model (TRL)
PARITY_CHARS = "0123456789+= abcdefghijklmnopqrstuvwxyz"


def save_parity_tiny(path, chars: str = PARITY_CHARS):
    """Char-level tokenizer (pad 0, EOS 1, no BOS) + a 2-layer x 64-wide Llama, seeded, saved
    HF-style at `path`: what the TRL parity tests hand to TRL's trainers and to ours."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1} | {c: i + 2 for i, c in enumerate(chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      pad_token_id=0, eos_token_id=1, bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


def load_noisy(path, noise: float = 0.0, seed: int = 1):
    """Load a saved model in train mode; `noise` > 0 perturbs every weight (policy != reference)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(path).train()  # from_pretrained returns eval mode
    if noise:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn(p.shape, generator=g))
    return model


def flat_grad(model: torch.nn.Module, loss: torch.Tensor | None = None) -> torch.Tensor:
    """d loss / d theta for every parameter, flattened [n_params] (or the gradients already
    accumulated, if `loss` is None); zeroes the gradients afterwards."""
    if loss is not None:
        model.zero_grad(set_to_none=True)
        loss.backward()
    g = torch.cat([torch.zeros_like(p).flatten() if p.grad is None else p.grad.detach().flatten().clone()
                   for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return g


def trl_args(tmp) -> dict:
    """TRL config arguments for a CPU, fp32, one-step, no-save parity run."""
    return dict(output_dir=str(tmp), bf16=False, use_cpu=True, gradient_checkpointing=False,
                report_to="none", save_strategy="no", max_steps=1, logging_steps=1)


GRPO_G, GRPO_P, GRPO_T = 8, 6, 8  # completions (2 groups of 4), prompt width, completion width


def crafted_grpo_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """A crafted rollout batch in TRL's GRPO layout: left-padded prompts (every other one with 2
    pads), completions of lengths 8,5,3,8,1,6,8,2 (EOS then pad), advantages of both signs and a 0."""
    G, P, T = GRPO_G, GRPO_P, GRPO_T
    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(2, 40, (G, P), generator=g)  # [G, P]
    prompt_mask = torch.ones(G, P, dtype=torch.long)
    prompt_mask[::2, :2] = 0
    prompt_ids[prompt_mask == 0] = 0
    completion_ids = torch.randint(2, 40, (G, T), generator=g)  # [G, T]
    lengths = torch.tensor([8, 5, 3, 8, 1, 6, 8, 2])  # [G] tokens kept (incl. EOS)
    completion_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # [G, T]
    completion_ids[torch.arange(G), lengths - 1] = 1  # EOS last, then pad
    completion_ids[completion_mask == 0] = 0
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "advantages": torch.tensor([1.2, -0.7, 0.0, -0.5, 0.9, -1.4, 0.3, 0.6])}


# ---------------------------------------------------------- a scripted sampler (no model needed)
def scripted_outcome(prompt: str, k: int) -> bool:
    """Whether the k-th copy of addition prompt "a+b=" in a sampling call is answered right:
    s = a + b; s % 4 == 0: every copy wrong, 1: every copy right, else copies k = 0, 2, ... right."""
    a, b = prompt.rstrip("=").split("+")
    s = int(a) + int(b)
    return {0: False, 1: True}.get(s % 4, k % 2 == 0)


def scripted_sample(model, tok, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
                    top_p: float = 1.0, greedy: bool = False, cache_implementation=None,
                    prefixes: list[str] | None = None):
    """core.sampling.sample's stand-in: same Rollout layout, but the completion of a copy of an
    addition prompt is a function of (prompt, copy index k in this call) only (`scripted_outcome`:
    the sum, or a wrong sum with k % 2 trailing zeros), so one process and each rank's share of a
    batch get the same rows. A forced `prefix` is continued by the rest of the scripted text."""
    from reference_impls.core.sampling import Rollout, encode, left_pad, right_pad

    device = next(model.parameters()).device
    prefixes = prefixes or [""] * len(prompts)
    seen: dict[str, int] = {}
    conts = []
    for p, f in zip(prompts, prefixes, strict=True):
        k = seen[p] = seen.get(p, -1) + 1
        a, b = p.rstrip("=").split("+")
        right = str(int(a) + int(b))
        target = right if scripted_outcome(p, k) else str(int(a) + int(b) + 1) + "0" * (k % 2)
        conts.append(target[len(f):] if target.startswith(f) else target[:1])
    p_tok, f_tok = encode(tok, prompts, prompt=True), encode(tok, prefixes)
    eos = tok.eos_token_id
    c_tok = [(c + [eos])[:max_new_tokens] for c in encode(tok, conts)]
    p_ids, p_mask = left_pad([p + f for p, f in zip(p_tok, f_tok, strict=True)], tok.pad_token_id, device)
    c_ids, c_mask = right_pad(c_tok, tok.pad_token_id, device)
    P = p_ids.shape[1]
    f_len = torch.tensor([len(f) for f in f_tok], device=device)
    in_prefix = (torch.arange(P, device=device) >= P - f_len[:, None]).long()  # [B, P]
    forced = torch.cat([in_prefix, torch.zeros_like(c_mask)], 1)[:, 1:].float()
    mask = torch.cat([in_prefix, c_mask], 1)[:, 1:].float()
    texts = [tok.decode(f + c, skip_special_tokens=True) for f, c in zip(f_tok, c_tok, strict=True)]
    return Rollout(torch.cat([p_ids, c_ids], 1), torch.cat([p_mask, c_mask], 1), mask, texts, P, forced)


@contextlib.contextmanager
def scripted_sampling() -> Iterator[None]:
    """Inside: core.sampling.sample is `scripted_sample` in every loaded reference_impls module
    that imported it (restored on exit)."""
    import sys

    from reference_impls.core import sampling

    real = sampling.sample
    mods = [m for n, m in list(sys.modules.items())
            if n.startswith("reference_impls") and getattr(m, "sample", None) is real]
    for m in mods:
        m.sample = scripted_sample
    try:
        yield
    finally:
        for m in mods:
            m.sample = real
