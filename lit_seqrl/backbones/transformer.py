"""GPT-style pre-LN causal decoder (the Decision Transformer's backbone).

No positional embedding here: agents add their own (DT a timestep embedding, DTQN learned
positions), so the backbone stays a pure sequence mixer. Attention runs on
``scaled_dot_product_attention`` (fused kernels where PyTorch has them); ``step`` uses a
fixed-capacity KV cache with a per-row length so rows can be reset independently.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones.base import Backbone, State


def attention_mask(mask: Tensor | None, seq_len: int) -> Tensor | None:
    """Boolean ``(B, 1, L, L)`` attention mask (True = may attend) from a ``(B, L)`` token mask.

    Causal, valid queries never see padded keys, and every query sees itself, so the left-padded
    rows of a window get a defined (ignored) output instead of NaN. None when nothing is padded,
    which lets SDPA use its ``is_causal`` fast path.
    """
    if mask is None or bool(mask.all()):
        return None
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=mask.device).tril()  # (L L)
    eye = torch.eye(seq_len, dtype=torch.bool, device=mask.device)  # (L L)
    return (causal & (mask[:, None, None, :] | eye)).contiguous()  # (B 1 L L)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, bias: bool = True) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        *lead, _ = x.shape
        q, k, v = self.qkv(x).view(*lead, 3, self.n_heads, self.head_dim).unbind(-3)  # 3 x (... H dh)
        return q, k, v

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        B, L, D = x.shape
        q, k, v = (t.transpose(1, 2) for t in self._heads(x))  # (B H L dh)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=attn_mask is None
        )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, L, D)))

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
    def __init__(self, d_model: int, n_heads: int, dropout: float, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
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
        dropout: dropout on attention weights, residual branches and the input.
        max_seq_len: KV-cache capacity for ``step`` (``forward`` has no length limit).
    """

    def __init__(
        self, d_model: int, n_layers: int = 3, n_heads: int = 1, dropout: float = 0.1, max_seq_len: int = 1024
    ) -> None:
        super().__init__(d_model)
        self.n_layers, self.n_heads, self.max_seq_len = n_layers, n_heads, max_seq_len
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
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
        attn_mask = attention_mask(mask, x.shape[1])
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.ln_f(x)

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
