"""GPT-style pre-LN causal decoder (the Decision Transformer's backbone).

No positional embedding here: agents add their own (DT a timestep embedding, DTQN learned
positions), so the backbone stays a pure sequence mixer. Attention runs on
``scaled_dot_product_attention`` (fused kernels where PyTorch has them; with dropout on CPU the
same math with cheaper masks, see :mod:`lit_seqrl.ops.attention`); ``step`` uses a
fixed-capacity KV cache with a per-row length so rows can be reset independently.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones.base import Backbone, State
from lit_seqrl.backbones.layers import Dropout
from lit_seqrl.ops.attention import attention


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
    return (causal & (mask[:, None, None, :] | eye)).contiguous()  # (B 1 L L)


def query_rows(attn_mask: Tensor | None, seq_len: int, index: slice | Tensor, device: torch.device) -> Tensor:
    """The rows of an attention mask (``None`` = causal) for the queries at ``index`` only."""
    if attn_mask is not None:
        return attn_mask[..., index, :]  # (B 1 L' L)
    keys = torch.arange(seq_len, device=device)
    return keys[None, :] <= keys[index][:, None]  # (L' L)


Activation = Literal["relu", "gelu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, bias: bool = True) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        self.resid_dropout = Dropout(dropout)

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
        """``x (B L D)`` -> ``(B L' D)``: every position, or only the queries at ``index``."""
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
        y = attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=attn_mask is None)  # (B H L' dh)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, q.shape[2], D)))

    def step(self, x_t: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor) -> Tensor:
        """One token per row: ``x_t (B D)``; caches ``(B H T dh)`` are written in place at ``pos (B)``."""
        B, D = x_t.shape
        q, k, v = self._heads(x_t)  # (B H dh)
        rows = torch.arange(B, device=x_t.device)
        k_cache[rows, :, pos] = k
        v_cache[rows, :, pos] = v
        t_max = int(pos.max()) + 1  # attend over the filled prefix only: O(t) per step
        keys = torch.arange(t_max, device=x_t.device)
        visible = (keys[None, :] <= pos[:, None])[:, None, None, :]  # (B 1 1 T)
        y = F.scaled_dot_product_attention(
            q[:, :, None], k_cache[:, :, :t_max], v_cache[:, :, :t_max], attn_mask=visible
        )
        return self.proj(y.reshape(B, D))


class Block(nn.Module):
    def __init__(
        self, d_model: int, n_heads: int, dropout: float, mlp_ratio: int = 4, activation: Activation = "gelu"
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            ACTIVATIONS[activation](),
            nn.Linear(mlp_ratio * d_model, d_model),
            Dropout(dropout),
        )

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, index: slice | Tensor | None = None
    ) -> Tensor:
        """``(B L D)`` -> ``(B L D)``, or ``(B L' D)`` for the positions at ``index`` only."""
        y = self.attn(self.ln_1(x), attn_mask, index)
        x = x + y if index is None else x[:, index] + y
        return x + self.mlp(self.ln_2(x))

    def step(self, x_t: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor) -> Tensor:
        x_t = x_t + self.attn.step(self.ln_1(x_t), k_cache, v_cache, pos)
        return x_t + self.mlp(self.ln_2(x_t))


class Transformer(Backbone):
    """Causal transformer: ``n_layers`` pre-LN blocks of ``n_heads`` attention heads.

    Args:
        d_model: token width.
        n_layers: number of blocks.
        n_heads: attention heads (``d_model`` must be divisible by it).
        dropout: dropout on attention weights and residual branches (the agent drops its input
            tokens itself, once, as DT does).
        max_seq_len: KV-cache capacity for ``step`` (``forward`` has no length limit).
        activation: the MLP's: GPT-2's ``"gelu"``, or ``"relu"`` as in the DT paper's code (and
            Hugging Face's and d3rlpy's DT), which is also a little faster on CPU.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int = 3,
        n_heads: int = 1,
        dropout: float = 0.1,
        max_seq_len: int = 1024,
        activation: Activation = "gelu",
    ) -> None:
        super().__init__(d_model)
        self.n_layers, self.n_heads, self.max_seq_len = n_layers, n_heads, max_seq_len
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, dropout, activation=activation) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.forward_at(x, mask, None)

    def forward_at(
        self, x: Tensor, mask: Tensor | None = None, index: slice | Tensor | None = slice(None)
    ) -> Tensor:
        """Outputs at ``index`` only; the last block computes nothing else (its queries, output
        projection and MLP run on the selected positions, which is most of that block's work)."""
        attn_mask = attention_mask(mask, x.shape[1])
        for block in self.blocks[:-1]:
            x = block(x, attn_mask)
        full = index is None or (isinstance(index, slice) and index == slice(None))
        return self.ln_f(self.blocks[-1](x, attn_mask, None if full else index))

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        head_dim = self.d_model // self.n_heads
        shape = (batch_size, self.n_layers, self.n_heads, self.max_seq_len, head_dim)
        return {
            "k": torch.zeros(shape, device=device, dtype=dtype),  # (B layers H T dh)
            "v": torch.zeros(shape, device=device, dtype=dtype),
            "pos": torch.zeros(batch_size, dtype=torch.long, device=device),  # (B) tokens seen per row
        }

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        pos = state["pos"]
        if int(pos.max()) >= self.max_seq_len:
            raise ValueError(
                f"transformer KV cache is full ({self.max_seq_len} tokens); build the backbone with a larger "
                "max_seq_len or reset finished rows with reset_state"
            )
        for i, block in enumerate(self.blocks):
            x_t = block.step(x_t, state["k"][:, i], state["v"][:, i], pos)
        return self.ln_f(x_t), {"k": state["k"], "v": state["v"], "pos": pos + 1}
