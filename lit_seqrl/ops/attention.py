"""Scaled dot-product attention whose training-time dropout uses :mod:`lit_seqrl.ops.dropout`.

With attention dropout on CPU, ``F.scaled_dot_product_attention`` runs its unfused math path
and draws the dropout mask with ``bernoulli_``; spelling that path out lets the probabilities
take the cheap mask instead. Everything else (no dropout, not on CPU, or inside a compiled graph)
goes to SDPA itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_seqrl.ops.dropout import check_probability, dropout


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
) -> Tensor:
    """``F.scaled_dot_product_attention`` semantics for ``q (..., Lq, E)``, ``k, v (..., Lk, E)``.

    ``attn_mask`` is boolean (True = may attend) and broadcasts to ``(..., Lq, Lk)``;
    ``is_causal`` is SDPA's top-left aligned causal mask. Returns ``(..., Lq, E)``.
    """
    check_probability(dropout_p)
    if dropout_p == 0.0 or q.device.type != "cpu" or torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal
        )
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise TypeError(f"attn_mask must be boolean, got {attn_mask.dtype}")
    lq, lk = q.shape[-2], k.shape[-2]
    if is_causal:
        attn_mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril()
    scores = torch.matmul(q, k.transpose(-2, -1)).mul_(1.0 / math.sqrt(q.shape[-1]))  # (... Lq Lk)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return torch.matmul(dropout(scores.softmax(-1), dropout_p), v)
