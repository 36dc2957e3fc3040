"""Causal self-attention with a key/value cache: the one attention every stack uses.

The transformer, the DTQN decoder and the attention layers of the hybrids (Mamba-2, Decision
ConvFormer) all run :class:`CausalSelfAttention`. Training runs
``F.scaled_dot_product_attention`` over the whole sequence; ``step`` keeps a fixed-capacity
cache of ``max_seq_len`` keys and values per row and a per-row length, so rows can be reset
independently. The cache state of one attention layer is::

    {"k": (B, H, T, dh), "v": (B, H, T, dh), "pos": (B,)}    T = max_seq_len, pos = tokens seen

``step`` writes the new key and value into the given cache tensors (as :class:`Backbone.step`'s
state convention allows) and returns them: the cost per token is O(tokens seen), never a copy of
the whole cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def attention_mask(mask: Tensor | None, seq_len: int) -> Tensor | None:
    """Boolean ``(B, 1, L, L)`` attention mask (True = may attend) from a ``(B, L)`` token mask.

    Causal, valid queries never see padded keys, and every query sees itself, so the left-padded
    rows of a window get a defined (ignored) output instead of NaN. None when nothing is padded,
    which lets SDPA use its ``is_causal`` fast path. A compiled graph always gets the explicit mask:
    checking the mask's values would break it.
    """
    if mask is None or (not torch.compiler.is_compiling() and bool(mask.all())):
        return None
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=mask.device).tril()  # (L L)
    eye = torch.eye(seq_len, dtype=torch.bool, device=mask.device)  # (L L)
    return (causal & (mask[:, None, None, :].to(torch.bool) | eye)).contiguous()  # (B 1 L L)


def query_rows(attn_mask: Tensor | None, seq_len: int, index: slice | Tensor, device: torch.device) -> Tensor:
    """The rows of an attention mask (``None`` = causal) for the queries at ``index`` only."""
    if attn_mask is not None:
        return attn_mask[..., index, :]  # (B 1 L' L)
    keys = torch.arange(seq_len, device=device)
    return keys[None, :] <= keys[index][:, None]  # (L' L)


def layer_indices(layers: Sequence[int] | str, n_layers: int) -> list[int]:
    """Which layers of a hybrid stack are attention layers: indices, ``"middle"`` or ``"last"``."""
    if isinstance(layers, str):
        named = {"middle": [n_layers // 2], "last": [n_layers - 1]}
        if layers not in named:
            raise ValueError(f"attn_layers must be a list of indices, 'middle' or 'last', got {layers!r}")
        return named[layers]
    indices = sorted(set(layers))
    if any(not 0 <= i < n_layers for i in indices):
        raise ValueError(f"attn_layers must be layer indices in [0, {n_layers}), got {list(layers)}")
    return indices


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention ``(B, L, D) -> (B, L, D)`` with a KV cache for ``step``.

    Args:
        d_model: token width (divisible by ``n_heads``).
        n_heads: attention heads.
        dropout: on the attention weights (training only).
        max_seq_len: KV-cache capacity of ``step`` (``forward`` has no length limit).
        resid_dropout: dropout on the output projection (GPT's; DTQN drops outside the layer).
        bias: biases of the input and output projections.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        max_seq_len: int = 1024,
        resid_dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        self.n_heads, self.head_dim, self.max_seq_len = n_heads, d_model // n_heads, max_seq_len
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(resid_dropout)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        *lead, _ = x.shape
        q, k, v = self.qkv(x).view(*lead, 3, self.n_heads, self.head_dim).unbind(-3)  # 3 x (... H dh)
        return q, k, v

    def _split_heads(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B H L dh)

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, index: slice | Tensor | None = None
    ) -> Tensor:
        """``x (B L D)`` -> ``(B L' D)``: every position (``index=None``), or the queries at ``index``.

        ``attn_mask``: boolean ``(B, 1, L, L)`` from :func:`attention_mask`, None for plain causal.
        """
        B, L, D = x.shape
        if index is None:
            q, k, v = (t.transpose(1, 2) for t in self._heads(x))  # (B H L dh)
        else:  # queries for the selected positions only; keys and values for all
            w_q, w_kv = self.qkv.weight.split([D, 2 * D])
            b_q, b_kv = self.qkv.bias.split([D, 2 * D]) if self.qkv.bias is not None else (None, None)
            q = self._split_heads(F.linear(x[:, index], w_q, b_q))  # (B H L' dh)
            k, v = (self._split_heads(t) for t in F.linear(x, w_kv, b_kv).chunk(2, dim=-1))
            attn_mask = query_rows(attn_mask, L, index, x.device)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=attn_mask is None
        )  # (B H L' dh)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, q.shape[2], D)))

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> dict[str, Tensor]:
        """An empty cache: ``{"k", "v": (B, H, max_seq_len, dh) zeros, "pos": (B,) zeros}``."""
        shape = (batch_size, self.n_heads, self.max_seq_len, self.head_dim)
        return {
            "k": torch.zeros(shape, device=device, dtype=dtype),  # (B H T dh)
            "v": torch.zeros(shape, device=device, dtype=dtype),
            "pos": torch.zeros(batch_size, dtype=torch.long, device=device),  # (B) tokens seen per row
        }

    def step(self, x_t: Tensor, cache: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One token per row ``x_t (B, D)`` -> ``(B, D)`` and the cache holding it.

        The key and value are written into ``cache``'s tensors at each row's ``pos``; only the
        filled prefix is attended over, so a step costs O(tokens seen), not O(max_seq_len).
        """
        pos = cache["pos"]
        if int(pos.max()) >= self.max_seq_len:
            raise ValueError(
                f"KV cache is full ({self.max_seq_len} tokens); build the backbone with a larger "
                "max_seq_len or reset finished rows with reset_state"
            )
        B, D = x_t.shape
        q, k, v = self._heads(x_t)  # (B H dh)
        k_cache, v_cache = cache["k"], cache["v"]
        rows = torch.arange(B, device=x_t.device)
        k_cache[rows, :, pos] = k.to(k_cache.dtype)
        v_cache[rows, :, pos] = v.to(v_cache.dtype)
        t_max = int(pos.max()) + 1  # attend over the filled prefix only
        keys = torch.arange(t_max, device=x_t.device)
        visible = (keys[None, :] <= pos[:, None])[:, None, None, :]  # (B 1 1 T)
        y = F.scaled_dot_product_attention(
            q[:, :, None], k_cache[:, :, :t_max], v_cache[:, :, :t_max], attn_mask=visible
        )  # (B H 1 dh)
        return self.proj(y.reshape(B, D)), {"k": k_cache, "v": v_cache, "pos": pos + 1}


class KVCacheBlock(nn.Module):
    """A residual block around one :class:`CausalSelfAttention` (``self.attn``): its state is the KV cache.

    Subclasses say what goes into the attention (``attention_input``, e.g. a pre-norm) and how its
    output joins the stream (``finish``: residual or gate, norms, the feed-forward sub-layer);
    ``forward`` and the cached ``step`` share both halves.
    """

    attn: CausalSelfAttention

    def attention_input(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def finish(self, x: Tensor, attn_out: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x (B, L, D)``; ``mask (B, L)`` True for real tokens (padded keys are never attended to)."""
        return self.finish(x, self.attn(self.attention_input(x), attention_mask(mask, x.shape[1])))

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> dict[str, Tensor]:
        return self.attn.init_state(batch_size, device, dtype)

    def step(self, x_t: Tensor, cache: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One token ``x_t (B, D)`` -> ``(B, D)`` and the cache holding it."""
        y, cache = self.attn.step(self.attention_input(x_t), cache)
        return self.finish(x_t, y), cache
