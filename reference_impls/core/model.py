"""Model + tokenizer loading: any Hugging Face causal LM id or local path, or the built-in "tiny" preset.

The tiny preset is a 2-layer x 64-wide Llama (~138 k parameters) with a character-level tokenizer
(`tokenizers` BPE with an explicit vocabulary and no merges, so every character is one token; digits
are single tokens). It is built locally from a `LlamaConfig`, seeded, and saved HF-style with
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
            num_key_value_heads=4, max_position_embeddings=128)


def cache_dir() -> Path:
    """Where built presets and warm-start bases live: $SFTRL_CACHE, else ~/.cache/sftrl."""
    return Path(os.environ.get("SFTRL_CACHE", Path.home() / ".cache" / "sftrl"))


def config_key(cfg: dict) -> str:
    """A short stable hash of a JSON-able config (cache key)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: BPE with an explicit vocab and no merges => one token per char."""
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *CHARS])}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def build_tiny(path: Path, seed: int = 0) -> Path:
    """Build the tiny preset (seeded init) and save it HF-style to `path`."""
    tok = char_tokenizer()
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


def tiny_path(seed: int = 0) -> Path:
    """Folder of the tiny preset for `seed`, built on first use."""
    path = cache_dir() / "models" / f"tiny-{config_key({**TINY, 'chars': CHARS, 'seed': seed})}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_tiny(path, seed)
    return path


def load_model(name: str = "tiny", device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load (model, tokenizer) from "tiny", a hub id or a local folder. Weights in `dtype` (fp32
    master weights by default; bf16 compute comes from autocast in the training loop)."""
    path = str(tiny_path()) if name == "tiny" else name
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:  # many causal LMs ship without a pad token
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return model, tok
