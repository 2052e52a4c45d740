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


def sequence_logprobs(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor,
                      temperature: float = 1.0, return_hidden: bool = False):
    """Forward a (possibly left-padded) batch and score it.   [B, T] -> logp [B, T-1]
    (and the last hidden state [B, T, H] if `return_hidden`)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids(attention_mask), output_hidden_states=return_hidden)
    logp = token_logprobs(out.logits, input_ids, temperature)
    return (logp, out.hidden_states[-1]) if return_hidden else logp
