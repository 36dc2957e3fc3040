"""S4 backbone (Gu et al. 2022): a pre-norm residual stack of S4 layers.

One layer maps ``u (B, L, H) -> (B, L, H)``: each channel is convolved with its SSM kernel (FFT,
O(L log L)) plus a skip ``D u``, then GELU, then a position-wise linear map with a GLU. Training
uses the convolution; ``step`` runs the same SSMs as recurrences in O(1) per token. The kernel
generator lives in :mod:`lit_seqrl.backbones.s4_kernel` (S4D's in :mod:`lit_seqrl.backbones.s4d`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones.base import PreNormBlock, Stack, options_from
from lit_seqrl.backbones.s4_kernel import DPLRKernel


class SSMKernel(Protocol):
    """What an S4-style layer needs from its kernel generator (DPLR for S4, diagonal for S4D)."""

    def __call__(self, L: int) -> Tensor: ...  # (H L) convolution kernel
    def init_state(
        self, batch_size: int, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> Tensor: ...
    def step(self, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]: ...  # (B H) -> (B H)


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
    """``u (B, L, H) -> y (B, L, H)``: SSM convolution + D skip, GELU, dropout, linear + GLU.

    With a ``mask``, padded positions feed zeros into the SSM, so its state is still zero when
    the first real token arrives: real tokens see exactly a fresh start.
    """

    def __init__(self, kernel: SSMKernel, H: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.kernel = kernel
        self.D = nn.Parameter(torch.randn(H))  # (H) skip connection, "D u" of the SSM
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(H, 2 * H)  # GLU halves it back to H

    def _mix(self, y: Tensor) -> Tensor:
        return F.glu(self.out(self.dropout(F.gelu(y))), dim=-1)

    def forward(self, u: Tensor, mask: Tensor | None = None) -> Tensor:
        """``u (B, L, H)``, optional ``mask (B, L)`` (True = real token) -> ``(B, L, H)``."""
        if mask is not None:
            u = u * mask[..., None].to(u.dtype)  # (B L H)
        K = self.kernel(u.shape[1])  # (H L)
        y = fft_conv(u.transpose(1, 2), K).transpose(1, 2)  # (B L H)
        return self._mix(y + self.D * u)

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """The kernel's state ``(B, H, N/2, 2)`` (the complex SSM state as a real view)."""
        return self.kernel.init_state(batch_size, device, dtype)

    def step(self, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``u (B, H)`` -> ``(B, H)`` and the new state (Ā, B̄ rebuilt from the current parameters)."""
        y, state = self.kernel.step(u, state)  # (B H)
        return self._mix(y + self.D * u), state


def load_old_keys(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Checkpoints written before the blocks held their norms keep loading:
    ``norms.i.*`` -> ``layers.i.norm.*`` and ``layers.i.{kernel,D,out}*`` -> ``layers.i.mixer.*``."""
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix) :].split(".")
        if parts[0] == "norms":
            state_dict[".".join([prefix + "layers", parts[1], "norm", *parts[2:]])] = state_dict.pop(key)
        elif parts[0] == "layers" and parts[2] in ("kernel", "D", "out"):
            state_dict[".".join([prefix + "layers", parts[1], "mixer", *parts[2:]])] = state_dict.pop(key)


@dataclass
class S4Config:
    d_model: int
    n_layers: int = 3
    d_state: int = 64  # N: real state size per channel (N/2 complex conjugate pairs are stored)
    dropout: float = 0.0  # after the GELU inside each layer and on each residual branch
    dt_min: float = 1e-3  # range of the log-uniform initial step Δ
    dt_max: float = 1e-1
    ssm_lr_scale: float | None = None  # learning-rate multiplier for Λ, P, B, Δ (weight decay is always 0)


class S4Stack(Stack):
    """Pre-norm residual S4 blocks ``x <- x + Dropout(S4Layer(LayerNorm(x)))``, then a LayerNorm.

    ``kernel()`` builds one layer's SSM kernel generator (DPLR for S4, diagonal for S4D).
    State: one ``(B, H, N/2, 2)`` tensor per layer (the complex SSM state as a real view).
    """

    def __init__(self, cfg: S4Config, kernel: Callable[[], SSMKernel]) -> None:
        if cfg.d_state < 2 or cfg.d_state % 2:
            raise ValueError(f"d_state must be even and >= 2 (conjugate pairs), got {cfg.d_state}")
        H = cfg.d_model
        blocks = (
            PreNormBlock(nn.LayerNorm(H), S4Layer(kernel(), H, cfg.dropout), cfg.dropout)
            for _ in range(cfg.n_layers)
        )
        super().__init__(H, blocks, nn.LayerNorm(H), names=("layers", "norm_f"))
        self.config = cfg
        self._register_load_state_dict_pre_hook(load_old_keys)


class S4Backbone(S4Stack):
    """S4 (DPLR kernels, HiPPO-LegS init); keyword arguments as :class:`S4Config`."""

    @options_from(S4Config)
    def __init__(self, d_model: int, **options: Any) -> None:
        cfg = S4Config(d_model=d_model, **options)
        kernel = partial(DPLRKernel, d_model, cfg.d_state, cfg.dt_min, cfg.dt_max, lr_scale=cfg.ssm_lr_scale)
        super().__init__(cfg, kernel)
