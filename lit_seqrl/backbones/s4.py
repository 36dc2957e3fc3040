"""S4 backbone (Gu et al. 2022): a pre-norm residual stack of S4 layers.

One layer maps ``u (B, L, H) -> (B, L, H)``: each channel is convolved with its SSM kernel (FFT,
O(L log L)) plus a skip ``D u``, then GELU, then a position-wise linear map with a GLU. Training
uses the convolution; ``step`` runs the same SSMs as recurrences in O(1) per token. The kernel
generator lives in :mod:`lit_seqrl.backbones.s4_kernel` (S4D's in :mod:`lit_seqrl.backbones.s4d`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones.base import Backbone, State
from lit_seqrl.backbones.s4_kernel import DPLRKernel
from lit_seqrl.ops.backend import Backend


class SSMKernel(Protocol):
    """What an S4-style layer needs from its kernel generator (DPLR for S4, diagonal for S4D)."""

    def __call__(self, L: int) -> Tensor: ...  # (H L) convolution kernel
    def init_state(
        self, batch_size: int, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> Tensor: ...
    def step(self, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]: ...  # (B H) -> (B H)


@dataclass
class S4Config:
    d_model: int
    n_layers: int = 3
    d_state: int = 64  # N: real state size per channel (N/2 complex conjugate pairs are stored)
    dropout: float = 0.0
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    ssm_lr_scale: float | None = None  # learning-rate multiplier for Λ, P, B, Δ (weight decay is always 0)
    backend: Backend = "auto"


def fft_conv(u: Tensor, K: Tensor) -> Tensor:
    """Causal convolution ``y_t = Σ_{k<=t} K_k u_{t-k}`` via FFT.

    Args:
        u: ``(B, H, L)``; K: ``(H, L)``. Returns ``(B, H, L)``.
    """
    L = u.shape[-1]
    n = 2 * L  # zero-padding to 2L turns the FFT's circular convolution into a linear one
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)  # (B H 2L)
    return y[..., :L]


class S4Layer(nn.Module):
    """``u (B, L, H) -> y (B, L, H)``: SSM convolution + D skip, GELU, dropout, linear + GLU."""

    def __init__(self, kernel: SSMKernel, H: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.kernel = kernel
        self.D = nn.Parameter(torch.randn(H))  # (H) skip connection, "D u" of the SSM
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(H, 2 * H)  # GLU halves it back to H

    def _mix(self, y: Tensor) -> Tensor:
        return F.glu(self.out(self.dropout(F.gelu(y))), dim=-1)

    def forward(self, u: Tensor) -> Tensor:
        K = self.kernel(u.shape[1])  # (H L)
        y = fft_conv(u.transpose(1, 2), K).transpose(1, 2)  # (B L H)
        return self._mix(y + self.D * u)

    def step(self, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``u (B, H)`` -> ``(B, H)`` and the new state."""
        y, state = self.kernel.step(u, state)  # (B H)
        return self._mix(y + self.D * u), state


class S4Backbone(Backbone):
    """Pre-norm residual stack ``x <- x + Dropout(S4Layer(LayerNorm(x)))``, then a final LayerNorm.

    With a left-padded ``mask``, padded positions feed zeros into every SSM, so the state is still
    zero when the first real token arrives: real tokens see exactly a fresh start.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int = 3,
        d_state: int = 64,
        dropout: float = 0.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        ssm_lr_scale: float | None = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(d_model)
        cfg = S4Config(d_model, n_layers, d_state, dropout, dt_min, dt_max, ssm_lr_scale, backend)
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be even and >= 2 (conjugate pairs), got {d_state}")
        self.config = cfg
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.layers = nn.ModuleList(S4Layer(self.make_kernel(cfg), d_model, dropout) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.norm_f = nn.LayerNorm(d_model)

    def make_kernel(self, cfg: S4Config) -> nn.Module:
        """The SSM kernel generator of one layer (S4: DPLR, HiPPO-LegS init)."""
        return DPLRKernel(cfg.d_model, cfg.d_state, cfg.dt_min, cfg.dt_max, cfg.ssm_lr_scale, cfg.backend)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x (B, L, D)``, optional ``mask (B, L)`` (True = real token) -> ``(B, L, D)``."""
        keep = None if mask is None else mask[..., None].to(x.dtype)  # (B L 1)
        for norm, layer in zip(self.norms, self.layers):
            z = norm(x)
            if keep is not None:
                z = z * keep
            x = x + self.dropout(layer(z))
        return self.norm_f(x)

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """One ``(B, H, N/2, 2)`` tensor per layer (the complex SSM state as a real view)."""
        return [layer.kernel.init_state(batch_size, device, dtype) for layer in self.layers]

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """``x_t (B, D)`` -> ``(B, D)``; Ā, B̄ are rebuilt from the current parameters on every call."""
        new_state = []
        for norm, layer, s in zip(self.norms, self.layers, state):
            y, s = layer.step(norm(x_t), s)
            x_t = x_t + self.dropout(y)
            new_state.append(s)
        return self.norm_f(x_t), new_state
