"""Model + tokenizer loading: any Hugging Face causal LM id or local path, or the built-in "tiny" preset.

The tiny preset is a 2-layer x 64-wide Llama (~138 k parameters) with a character-level tokenizer
(`tokenizers` BPE with an explicit vocabulary and no merges, so every character is one token; digits
are single tokens). Its vocabulary is `CHARS` plus any other character of the task's texts
(`tiny_path(extra_chars)`): any text a user brings gets its own tiny model; a character never seen
in the data maps to <unk>. It is built locally from a `LlamaConfig`, seeded, and saved HF-style with
`save_pretrained`, so any HF tool (TRL included) loads the very same folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
CHARS = "0123456789+-*/=()., \n" + "abcdefghijklmnopqrstuvwxyz"
TINY = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=2048)  # RoPE: no parameters depend on it


def cache_dir() -> Path:
    """Where built presets and warm-start bases live: $SFTRL_CACHE, else ~/.cache/sftrl. Models are
    always cached: `SFTRL_CACHE=off` (the old catalogue-cache switch) means the default folder here,
    never a folder named `off` in the working directory."""
    setting = os.environ.get("SFTRL_CACHE", "")
    if not setting or setting.lower() in ("0", "off", "no", "false"):
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sftrl"
    return Path(setting)


def config_key(cfg: dict) -> str:
    """A short stable hash of a JSON-able config (cache key)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def char_tokenizer(extra_chars: str = "") -> PreTrainedTokenizerFast:
    """Character-level tokenizer: BPE with an explicit vocab and no merges => one token per char.
    `extra_chars` (sorted, not in CHARS) are appended, so CHARS keep their ids."""
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *CHARS, *extra_chars])}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def build_tiny(path: Path, seed: int = 0, extra_chars: str = "") -> Path:
    """Build the tiny preset (seeded init) and save it HF-style to `path`."""
    tok = char_tokenizer(extra_chars)
    cfg = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=False,
                      **TINY)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if path.exists():  # another process built it meanwhile
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, path)
    return path


def extra_chars(chars: set[str] | str) -> str:
    """The characters of `chars` the default vocabulary lacks, sorted (special tokens never)."""
    return "".join(sorted(set(chars) - set(CHARS)))


def tiny_path(seed: int = 0, chars: set[str] | str = "") -> Path:
    """Folder of the tiny preset for `seed` whose vocabulary covers `chars`, built on first use."""
    extra = extra_chars(chars)
    key = {**TINY, "chars": CHARS + extra, "seed": seed}
    path = cache_dir() / "models" / f"tiny-{config_key(key)}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_tiny(path, seed, extra)
    return path


def load_model(name: str = "tiny", device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, chars: set[str] | str = "",
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load (model, tokenizer) from "tiny" (vocabulary covering `chars`), a hub id or a local
    folder. Weights in `dtype` (fp32 master weights by default; bf16 compute comes from autocast
    in the training loop). Dropout is off (`model.eval()` semantics are set by the loop)."""
    path = str(tiny_path(chars=chars)) if name == "tiny" else name
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:  # many causal LMs ship without a pad token
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    disable_dropout(model)
    return model, tok


def disable_dropout(model: torch.nn.Module) -> None:
    """Zero every dropout (TRL's `disable_dropout=True`): the losses compare log-probs of policy,
    old policy and reference, which dropout would make random; sampling runs without it anyway."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for attr in ("attention_dropout", "dropout", "hidden_dropout", "attn_dropout"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, 0.0)
    cfg = getattr(model, "config", None)
    for k, v in (vars(cfg).items() if cfg is not None else []):
        if "dropout" in k and isinstance(v, float):
            setattr(cfg, k, 0.0)


def set_gradient_checkpointing(module: torch.nn.Module, on: bool) -> int:
    """Turn Hugging Face gradient checkpointing on or off in every model inside `module` (a policy,
    or a policy + critic): each transformer block's activations are recomputed in the backward
    pass instead of kept (less memory, about one more forward of compute). Non-reentrant
    checkpointing, so it also works when the inputs do not require grad (LoRA: frozen embeddings).
    Returns how many models were switched (0: none supports it)."""
    if on and getattr(module, "is_adapter_disabled_view", None) is False:  # core/lora.AdapterView
        raise ValueError("gradient_checkpointing with a second LoRA adapter (a trained copy of the "
                         "policy) is not supported: backward would recompute with the policy's adapter")
    models = [m for m in module.modules()
              if isinstance(m, PreTrainedModel) and getattr(m, "supports_gradient_checkpointing", False)]
    for m in models:
        if on:
            m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif is_checkpointing(m):
            m.activation_checkpointing_disable()
    return len(models)


def is_checkpointing(model: torch.nn.Module) -> bool:
    """Whether gradient (activation) checkpointing is on in any block of `model`."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
