"""Per-token log-probabilities.

Convention: output position t scores token t+1 of the input, so a [B, T] input gives [B, T-1]
log-probs, and every mask over the input is shifted alike (`mask[:, 1:]`).
"""

from __future__ import annotations

import torch
from torch import Tensor


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


def sequence_logprobs(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor,
                      temperature: float = 1.0, return_hidden: bool = False,
                      return_entropy: bool = False):
    """Forward a (possibly left-padded) batch and score it.   [B, T] -> logp [B, T-1]
    plus, in this order when asked, the per-token entropy [B, T-1] (differentiable: detach it
    where a method uses it as a weight) and the last hidden state [B, T, H]."""
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids(attention_mask), output_hidden_states=return_hidden)
    logp = token_logprobs(out.logits, input_ids, temperature)
    extra = []
    if return_entropy:
        extra.append(token_entropy(out.logits, temperature))
    if return_hidden:
        extra.append(out.hidden_states[-1])
    return (logp, *extra) if extra else logp
