"""The DTQN transformer decoder (Esslinger, Platt & Amato, 2022), with its two ablation switches.

A causal self-attention stack like GPT's, where each sub-layer's output goes through a ReLU and is
then merged into the stream by a *combine* step, as in the official ``TransformerLayer``:

* ``gate="residual"``: ``x + relu(y)`` (the paper's default);
* ``gate="gru"``: the GRU-style gate of GTrXL (Parisotto et al., 2020).

``identity_map_reordering=False`` (the paper's default) normalises *after* each combine
(post-LN). ``True`` moves the LayerNorm in front of each sub-layer: the "identity map
reordering" of GTrXL. Both end with a final LayerNorm, as the official network does before its
Q-value head.

Where this differs from the official code, on purpose:

* each block has its own two gates; the official network builds one attention gate and one
  feed-forward gate and shares them across all blocks;
* our gate has biases on ``W_r``, ``W_z`` and ``W_g`` (``W_r``, ``W_g`` start at zero);
  the official gate has a bias on ``W_z`` only;
* ``W_z``'s bias starts at ``-2`` (GTrXL's identity-map initialisation, kept by
  :func:`dtqn_init`); the official gate sets ``-2`` too but the network's weight initialisation
  runs afterwards and zeroes every Linear bias, so its gates effectively start at ``0``.

No positional information is added here; the agent adds its learned position embeddings.
The attention is the shared :class:`lit_seqrl.backbones.attention.CausalSelfAttention`; ``step``
keeps its key/value cache of ``max_seq_len`` entries per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones.attention import CausalSelfAttention, KVCacheBlock
from lit_seqrl.backbones.base import Stack


class GRUGate(nn.Module):
    """GTrXL gate ``g(x, y)``: ``r = σ(W_r y + U_r x)``, ``z = σ(W_z y + U_z x + b_z)``,
    ``h = tanh(W_g y + U_g (r ⊙ x))``, ``g = (1 - z) ⊙ x + z ⊙ h`` with ``b_z = -2`` initially."""

    def __init__(self, d_model: int, bias_init: float = -2.0) -> None:
        super().__init__()
        self.d_model, self.bias_init = d_model, bias_init
        self.w = nn.Linear(d_model, 3 * d_model)  # W_r, W_z, W_g applied to the sub-layer output y
        self.u_rz = nn.Linear(d_model, 2 * d_model, bias=False)  # U_r, U_z applied to the stream x
        self.u_g = nn.Linear(d_model, d_model, bias=False)
        self.init_bias()

    def init_bias(self) -> None:
        """Biases to zero except ``b_z = bias_init``: the gate starts close to the identity map."""
        with torch.no_grad():
            self.w.bias.zero_()
            self.w.bias[self.d_model : 2 * self.d_model].fill_(self.bias_init)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        wr, wz, wg = self.w(y).chunk(3, dim=-1)
        ur, uz = self.u_rz(x).chunk(2, dim=-1)
        r = torch.sigmoid(wr + ur)
        z = torch.sigmoid(wz + uz)
        h = torch.tanh(wg + self.u_g(r * x))
        return (1 - z) * x + z * h


class Residual(nn.Module):
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x + y


class DTQNBlock(KVCacheBlock):
    def __init__(
        self, d_model: int, n_heads: int, dropout: float, gate: str, pre_norm: bool, max_seq_len: int
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = CausalSelfAttention(d_model, n_heads, dropout, max_seq_len)
        self.ff = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.ReLU(), nn.Linear(4 * d_model, d_model))
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.combine1, self.combine2 = (
            (GRUGate(d_model), GRUGate(d_model)) if gate == "gru" else (Residual(), Residual())
        )
        self.drop = nn.Dropout(dropout)

    def attention_input(self, x: Tensor) -> Tensor:
        return self.ln1(x) if self.pre_norm else x

    def finish(self, x: Tensor, attn_out: Tensor) -> Tensor:
        """Combine the attention output into the stream, then the feed-forward sub-layer.

        Both variants pass each sub-layer's output through a ReLU before the combine, as the
        official ``TransformerLayer`` and ``TransformerIdentityLayer`` do.
        """
        if self.pre_norm:  # identity map reordering
            x = self.combine1(x, F.relu(self.drop(attn_out)))
            return self.combine2(x, F.relu(self.drop(self.ff(self.ln2(x)))))
        x = self.ln1(self.combine1(x, F.relu(self.drop(attn_out))))
        return self.ln2(self.combine2(x, F.relu(self.drop(self.ff(x)))))


class DTQNTransformer(Stack):
    """DTQN's transformer decoder as a backbone.

    Args:
        d_model: token width (the paper uses 128).
        n_layers: number of blocks (paper: 2).
        n_heads: attention heads (paper: 8).
        dropout: dropout on sub-layer outputs and attention weights (paper: 0).
        gate: ``"residual"`` or ``"gru"`` combine step.
        identity_map_reordering: pre-LN blocks instead of post-LN ones.
        max_seq_len: key/value cache length for :meth:`step`.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int = 2,
        n_heads: int = 8,
        dropout: float = 0.0,
        gate: str = "residual",
        identity_map_reordering: bool = False,
        max_seq_len: int = 512,
    ) -> None:
        if gate not in ("residual", "gru"):
            raise ValueError(f"gate must be 'residual' or 'gru', got {gate!r}")
        blocks = (
            DTQNBlock(d_model, n_heads, dropout, gate, identity_map_reordering, max_seq_len)
            for _ in range(n_layers)
        )
        # The final norm: the official network's, before its Q head, in both variants.
        super().__init__(d_model, blocks, nn.LayerNorm(d_model))
        self.n_layers, self.n_heads, self.max_seq_len = n_layers, n_heads, max_seq_len
        dtqn_init(self)


def dtqn_init(module: nn.Module) -> None:
    """The official DTQN initialisation, applied to every sub-module of ``module``.

    Linear and Embedding weights ``N(0, 0.02)``, Linear biases zero, LayerNorm ``(1, 0)``; then each
    :class:`GRUGate` gets its ``b_z`` back (see the module docstring).
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, GRUGate):
            m.init_bias()
