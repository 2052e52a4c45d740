"""Per-token log-probabilities.

Convention: output position t scores token t+1 of the input, so a [B, T] input gives [B, T-1]
log-probs, and every mask over the input is shifted alike (`mask[:, 1:]`).

Chunked scoring (`logit_chunking(n)`, set by the training loop from `TrainConfig.logit_chunk`):
`sequence_logprobs` runs the decoder once, then applies the output head and the log-softmax to
`n` token positions at a time, each chunk recomputed in the backward pass (activation
checkpointing), so the [B, T, V] float32 logits never exist at once, forward or backward: memory
O(n V) instead of O(B T V). Same values and gradients as the plain path, to float round-off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

_LOGIT_CHUNK = 0  # token positions per chunk of `sequence_logprobs` (0: whole-batch logits)
_UNSUPPORTED_SCALING = ("logit_scale", "logits_scaling")  # Cohere / Granite: head output rescaled


def token_logprobs(logits: Tensor, input_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """log pi(x_{t+1} | x_{<=t}) for t = 0..T-2.   logits [B, T, V], input_ids [B, T] -> [B, T-1]."""
    logits = logits[:, :-1].float() / temperature  # [B, T-1, V]
    targets = input_ids[:, 1:].unsqueeze(-1)  # [B, T-1, 1]
    # log softmax(z)_y = z_y - logsumexp(z)   (gather first: never materialises a [B,T,V] log-softmax)
    return logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding, as `generate()` computes them.   [B, T] -> [B, T]."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def token_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """H_t = -sum_v p_v log p_v of the next-token distribution softmax(z / T) at each position
    that scores a token (the same alignment as `token_logprobs`).   logits [B, T, V] -> [B, T-1]"""
    z = logits[:, :-1].float() / temperature  # [B, T-1, V]
    logp = torch.log_softmax(z, -1)
    return -(logp.exp() * logp).sum(-1)


@contextlib.contextmanager
def logit_chunking(chunk: int) -> Iterator[None]:
    """Within this block `sequence_logprobs` scores `chunk` token positions at a time (0: off)."""
    global _LOGIT_CHUNK
    if chunk < 0:
        raise ValueError(f"logit_chunk must be >= 0 (0 = off), got {chunk}")
    old, _LOGIT_CHUNK = _LOGIT_CHUNK, chunk
    try:
        yield
    finally:
        _LOGIT_CHUNK = old


def sequence_logprobs(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor,
                      temperature: float = 1.0, return_hidden: bool = False,
                      return_entropy: bool = False, chunk: int | None = None):
    """Forward a (possibly left-padded) batch and score it.   [B, T] -> logp [B, T-1]
    plus, in this order when asked, the per-token entropy [B, T-1] (differentiable: detach it
    where a method uses it as a weight) and the last hidden state [B, T, H].
    `chunk` > 0: score that many positions at a time (`chunked_sequence_logprobs`); None: the
    value `logit_chunking` set (0 outside it: the plain whole-batch path)."""
    chunk = _LOGIT_CHUNK if chunk is None else chunk
    if chunk > 0:
        return chunked_sequence_logprobs(model, input_ids, attention_mask, chunk, temperature,
                                         return_hidden, return_entropy)
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids(attention_mask), output_hidden_states=return_hidden)
    logp = token_logprobs(out.logits, input_ids, temperature)
    extra = []
    if return_entropy:
        extra.append(token_entropy(out.logits, temperature))
    if return_hidden:
        extra.append(out.hidden_states[-1])
    return (logp, *extra) if extra else logp


def _causal_lm(model) -> tuple[torch.nn.Module, Callable[[], contextlib.AbstractContextManager]]:
    """(the Hugging Face causal LM inside `model`, a factory of the context to run it in): a plain
    model; a peft `PeftModel` (its base model, adapters in place); core/lora.py's adapter views
    (`AdapterDisabled`, `AdapterView`: their `_off()` runs the shared module as the view)."""
    if hasattr(type(model), "_off"):  # a core/lora.py view: run its module inside the view's context
        return model.model, model._off
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        return model.get_base_model(), contextlib.nullcontext
    return model, contextlib.nullcontext


def chunked_sequence_logprobs(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor,
                              chunk: int, temperature: float = 1.0, return_hidden: bool = False,
                              return_entropy: bool = False):
    """`sequence_logprobs` with the output head applied to `chunk` token positions at a time.
    The decoder (`get_decoder()`) gives the final hidden states [B, T, H]; for each chunk of the
    B*(T-1) scoring positions, head -> (final logit soft-capping, as Gemma 2) -> float32 / T ->
    log-prob of the next token (and entropy), under activation checkpointing when grad is on:
    backward keeps the hidden states and recomputes one chunk's [chunk, V] logits at a time."""
    from reference_impls.core import distributed

    lm, ctx = _causal_lm(model)
    if distributed.is_fsdp(lm):
        raise ValueError("logit_chunk > 0 is not supported with --fsdp (the decoder is called "
                         "without the sharded root's forward); set logit_chunk=0")
    cfg = getattr(lm, "config", None)
    for name in _UNSUPPORTED_SCALING:
        if getattr(cfg, name, None) not in (None, 1, 1.0):
            raise ValueError(f"logit_chunk > 0: {type(lm).__name__} rescales its logits "
                             f"(config.{name}={getattr(cfg, name)}), which the chunked head does not "
                             "reproduce; set logit_chunk=0")
    softcap = getattr(cfg, "final_logit_softcapping", None)
    head = lm.get_output_embeddings()
    if head is None:
        raise ValueError(f"logit_chunk > 0: {type(lm).__name__} has no output embeddings "
                         "(get_output_embeddings() is None); set logit_chunk=0")
    with ctx():
        h = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids(attention_mask), use_cache=False).last_hidden_state

    def score(hc: Tensor, yc: Tensor) -> tuple[Tensor, ...]:  # [n, H], [n] -> logp [n] (, entropy [n])
        with ctx():  # entered anew for every chunk and for its recomputation in backward
            z = head(hc)  # [n, V]
        if softcap:
            z = torch.tanh(z / softcap) * softcap
        z = z.float() / temperature
        logp = z.gather(-1, yc.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)
        if not return_entropy:
            return (logp,)
        lz = torch.log_softmax(z, -1)
        return logp, -(lz.exp() * lz).sum(-1)

    B, T, H = h.shape
    hs, ys = h[:, :-1].reshape(-1, H), input_ids[:, 1:].reshape(-1)  # [B*(T-1), H], [B*(T-1)]
    grad = torch.is_grad_enabled()
    parts = [checkpoint(score, hs[i:i + chunk], ys[i:i + chunk], use_reentrant=False) if grad
             else score(hs[i:i + chunk], ys[i:i + chunk]) for i in range(0, hs.shape[0], chunk)]
    logp, *extra = (torch.cat(p).view(B, T - 1) for p in zip(*parts, strict=True))
    if return_hidden:
        extra.append(h)
    return (logp, *extra) if extra else logp
