"""GPT-style pre-LN causal decoder (the Decision Transformer's backbone).

No positional embedding here: agents add their own (DT a timestep embedding, DTQN learned
positions), so the backbone stays a pure sequence mixer. Attention is
:class:`lit_seqrl.backbones.attention.CausalSelfAttention` (``scaled_dot_product_attention``;
``step`` uses its fixed-capacity KV cache with a per-row length so rows reset independently).
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from lit_seqrl.backbones.attention import CausalSelfAttention, KVCacheBlock, attention_mask
from lit_seqrl.backbones.base import Stack

Activation = Literal["relu", "gelu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class Block(KVCacheBlock):
    """Pre-LN transformer block ``x <- x + Attn(LN(x)); x <- x + MLP(LN(x))`` (also the hybrids' attention layer)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float,
        mlp_ratio: int = 4,
        activation: Activation = "gelu",
        max_seq_len: int = 1024,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout, max_seq_len, resid_dropout=dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            ACTIVATIONS[activation](),
            nn.Linear(mlp_ratio * d_model, d_model),
            nn.Dropout(dropout),
        )

    def attention_input(self, x: Tensor) -> Tensor:
        return self.ln_1(x)

    def finish(self, x: Tensor, attn_out: Tensor) -> Tensor:
        x = x + attn_out
        return x + self.mlp(self.ln_2(x))

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        index: slice | Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """``(B L D)`` -> ``(B L D)``, or ``(B L' D)`` for the positions at ``index`` only.

        ``mask (B, L)``: the token mask; or pass ``attn_mask`` already built from it (a stack of
        attention blocks builds it once).
        """
        if attn_mask is None:
            attn_mask = attention_mask(mask, x.shape[1])
        y = self.attn(self.attention_input(x), attn_mask, index)
        return self.finish(x if index is None else x[:, index], y)


class Transformer(Stack):
    """Causal transformer: ``n_layers`` pre-LN blocks of ``n_heads`` attention heads.

    Args:
        d_model: token width.
        n_layers: number of blocks.
        n_heads: attention heads (``d_model`` must be divisible by it).
        dropout: dropout on attention weights and residual branches (the agent drops its input
            tokens itself, once, as DT does).
        max_seq_len: KV-cache capacity for ``step`` (``forward`` has no length limit).
        activation: the MLP's: GPT-2's ``"gelu"``, or ``"relu"`` as in the DT paper's code (and
            Hugging Face's and d3rlpy's DT).

    State: one KV cache per block, ``{"k", "v": (B, n_heads, max_seq_len, d_model / n_heads), "pos": (B,)}``.
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
        blocks = (
            Block(d_model, n_heads, dropout, activation=activation, max_seq_len=max_seq_len)
            for _ in range(n_layers)
        )
        super().__init__(d_model, blocks, nn.LayerNorm(d_model))
        self.n_layers, self.n_heads, self.max_seq_len = n_layers, n_heads, max_seq_len
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
        return self.forward_at(x, mask)

    def forward_at(
        self, x: Tensor, mask: Tensor | None = None, index: slice | Tensor | None = None
    ) -> Tensor:
        """Outputs at ``index`` only (None: all); the last block computes nothing else (its queries,
        output projection and MLP run on the selected positions, most of that block's work)."""
        attn_mask = attention_mask(mask, x.shape[1])
        for block in self.blocks[:-1]:
            x = block(x, attn_mask=attn_mask)
        return self.ln_f(self.blocks[-1](x, index=index, attn_mask=attn_mask))
