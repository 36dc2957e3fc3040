"""Decision ConvFormer (Kim et al. 2024, "Decision ConvFormer: Local Filtering in MetaFormer is
Sufficient for Decision Making") and its hybrid with attention.

DC is a MetaFormer: each block is ``x <- x + TokenMixer(LN(x)); x <- x + MLP(LN(x))`` and the
token mixer is a depthwise causal convolution over the last ``window`` tokens instead of
attention. The paper's argument: in an MDP the action depends on the current state and the
few tokens around it, so a short local filter is enough (its MuJoCo window is 6 tokens, i.e. two
(R, s, a) steps, which is our default). The convolution only mixes along time; the MLP mixes
channels.

* ``token_types``: the paper uses separate filters for return, state and action tokens. The
  backbone knows no RL, so this is a period: token ``t`` uses filter bank ``t mod token_types``
  (3, the default, for the interleaved R, s, a layout; 2 without returns, 1 for one token per
  step). Windows are left-padded by whole steps, so positions keep their type.
* ``attn_layers`` makes the blocks it lists the transformer's attention blocks, so the top of
  the stack sees the whole context: the paper's hybrid DC for long-horizon tasks such as Atari,
  registered as ``dc_hybrid`` (attention in the last block).

``step`` carries the last ``window`` inputs of every convolution (a rolling buffer, O(1) per
token) and, for attention blocks, a KV cache of ``max_seq_len`` tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones.attention import layer_indices
from lit_seqrl.backbones.base import Stack
from lit_seqrl.backbones.transformer import Block as AttentionBlock
from lit_seqrl.ops.causal_conv import causal_conv1d


class CausalTokenConv(nn.Module):
    """Depthwise causal convolution over the last ``window`` tokens: ``(B, L, D) -> (B, L, D)``.

    ``y[t, d] = bias[k, d] + Σ_j weight[k, d, j] · x[t - W + 1 + j, d]`` with ``k = t mod token_types``
    and zeros before the first token. Output ``t`` sees inputs ``t-W+1 .. t`` only.
    """

    def __init__(self, d_model: int, window: int, token_types: int = 1, bias: bool = True) -> None:
        super().__init__()
        if window < 1 or token_types < 1:
            raise ValueError(f"window and token_types must be >= 1, got {window} and {token_types}")
        self.window, self.token_types = window, token_types
        bound = 1 / math.sqrt(window)  # nn.Conv1d's default init for a depthwise filter
        self.weight = nn.Parameter(
            torch.empty(token_types, d_model, window).uniform_(-bound, bound)
        )  # (T D W)
        self.bias = nn.Parameter(torch.empty(token_types, d_model).uniform_(-bound, bound)) if bias else None

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """``x (B, L, D)``; ``keep (B, L, 1)`` zeroes padded tokens so real ones see zeros, as unpadded."""
        if keep is not None:
            x = x * keep
        u = x.transpose(1, 2)  # (B D L)
        if self.token_types == 1:
            b = None if self.bias is None else self.bias[0]
            return causal_conv1d(u, self.weight[0], b).transpose(1, 2)
        L, W = u.shape[-1], self.window
        windows = F.pad(u, (W - 1, 0)).unfold(-1, W, 1)  # (B D L W): the W inputs ending at each t
        kind = torch.arange(L, device=x.device) % self.token_types  # (L) filter bank per position
        y = torch.einsum("bdlw,ldw->bld", windows, self.weight[kind])  # (B L D)
        return y if self.bias is None else y + self.bias[kind]

    def init_state(
        self, batch_size: int, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> Tensor:
        return torch.zeros(
            batch_size, self.weight.shape[1], self.window, device=device, dtype=dtype
        )  # (B D W)

    def step(self, x_t: Tensor, buf: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """``x_t (B, D)``, ``buf (B, D, W)`` last inputs oldest first, ``pos (B,)`` token index -> ``y_t``, new buffer."""
        buf = torch.cat([buf[..., 1:], x_t[..., None].to(buf.dtype)], dim=-1)  # (B D W)
        kind = pos % self.token_types  # (B)
        y = (buf * self.weight[kind]).sum(-1)  # (B D)
        return (y if self.bias is None else y + self.bias[kind]).to(x_t.dtype), buf


class ConvBlock(nn.Module):
    """MetaFormer block with a causal convolution token mixer (pre-LN, as the DT blocks)."""

    def __init__(self, d_model: int, window: int, token_types: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.mixer = CausalTokenConv(d_model, window, token_types)
        self.drop = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x (B, L, D)``; ``mask (B, L)`` True for real tokens: the convolution sees zeros at padding."""
        keep = None if mask is None else mask[..., None].to(x.dtype)  # (B L 1)
        x = x + self.drop(self.mixer(self.ln_1(x), keep))
        return x + self.mlp(self.ln_2(x))

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> dict[str, Tensor]:
        """``{"buf": (B, D, window) last inputs, "pos": (B,) tokens seen}`` (pos picks the filter bank)."""
        return {
            "buf": self.mixer.init_state(batch_size, device, dtype),
            "pos": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        y, buf = self.mixer.step(self.ln_1(x_t), state["buf"], state["pos"])
        x_t = x_t + self.drop(y)
        return x_t + self.mlp(self.ln_2(x_t)), {"buf": buf, "pos": state["pos"] + 1}


class DecisionConvFormer(Stack):
    """Stack of ``n_layers`` convolution blocks and a final LayerNorm (Decision ConvFormer).

    Args:
        d_model: token width.
        n_layers: number of blocks.
        window: tokens each convolution sees (the current one and ``window - 1`` before it).
        token_types: filter banks used cyclically along the sequence (3 = DC's R/s/a filters).
        mlp_ratio: hidden width of the MLP, in multiples of ``d_model``.
        dropout: on the mixer and MLP outputs.
        attn_layers: blocks that are attention blocks instead: indices, ``"middle"`` or ``"last"``
            (the hybrid DC, registered as ``dc_hybrid``).
        n_heads, max_seq_len: attention heads and KV-cache capacity of attention blocks.

    ``mask`` (``(B, L)``, True = real token, padding on the left): convolutions see zeros at
    padded steps and attention never attends to them, so real tokens get the unpadded outputs.

    State: per block ``{"buf": (B, D, window), "pos": (B,)}``, or the attention's ``{"k", "v", "pos"}``.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int = 3,
        window: int = 6,
        token_types: int = 3,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        attn_layers: Sequence[int] | str = (),
        n_heads: int = 1,
        max_seq_len: int = 1024,
    ) -> None:
        attn = layer_indices(attn_layers, n_layers)
        blocks = (
            AttentionBlock(d_model, n_heads, dropout, max_seq_len=max_seq_len)
            if i in attn
            else ConvBlock(d_model, window, token_types, mlp_ratio, dropout)
            for i in range(n_layers)
        )
        super().__init__(d_model, blocks, nn.LayerNorm(d_model))
        self.attn_layers, self.n_heads, self.max_seq_len = attn, n_heads, max_seq_len
        for module in self.modules():  # GPT-2 / DT initialisation of the linear maps
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
