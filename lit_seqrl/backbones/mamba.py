"""Mamba backbone (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces").

A stack of pre-norm residual blocks ``x <- x + Mamba(Norm(x))`` and a final norm. The mixer has
the parameter names, shapes and initialisation of ``mamba_ssm.modules.mamba_simple.Mamba``
(in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), so its state dict loads into ours and
back; the stack uses the names of ``mamba_ssm``'s MixerModel (``layers.i.mixer``,
``layers.i.norm``, ``norm_f``). The math lives in :mod:`lit_seqrl.ops.selective_scan` and
:mod:`lit_seqrl.ops.causal_conv`; ``backend`` picks the official CUDA kernels or PyTorch.

``step`` carries, per layer, the convolution's last ``d_conv`` inputs ``(B, d_inner, d_conv)`` and
the SSM state ``(B, d_inner, d_state)``: O(1) memory and time per token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones.base import PreNormBlock, Stack, mark_parameters, options_from
from lit_seqrl.ops.backend import Backend
from lit_seqrl.ops.causal_conv import causal_conv1d, causal_conv1d_update
from lit_seqrl.ops.selective_scan import selective_scan, selective_state_update

Norm = Literal["rmsnorm", "layernorm"]


@dataclass
class MambaConfig:
    d_model: int
    n_layers: int = 3
    d_state: int = 16  # N: SSM state size per channel
    d_conv: int = 4  # width of the causal convolution
    expand: int = 2  # d_inner = expand * d_model
    dt_rank: int | Literal["auto"] = "auto"  # "auto": ceil(d_model / 16)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj bias
    norm: Norm = "rmsnorm"
    norm_eps: float = 1e-5
    dropout: float = 0.0  # on each residual branch
    ssm_lr_scale: float | None = None  # learning-rate multiplier for A_log, D, dt_proj (never weight decay)
    backend: Backend = "auto"


def make_norm(kind: Norm, d: int, eps: float) -> nn.Module:
    if kind == "rmsnorm":
        return nn.RMSNorm(d, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(d, eps=eps)
    raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', got {kind!r}")


def inverse_softplus_dt(n: int, dt_min: float, dt_max: float, floor: float) -> Tensor:
    """Bias whose softplus is log-uniform in ``[dt_min, dt_max]`` (floored), Mamba's Δ initialisation: ``(n,)``."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus⁻¹(dt), stable for small dt


class MambaMixer(nn.Module):
    """Mamba's selective SSM mixer ``(B, L, d_model) -> (B, L, d_model)``, official parameter layout."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_inner = cfg.expand * cfg.d_model
        self.d_inner, self.d_state, self.d_conv = d_inner, cfg.d_state, cfg.d_conv
        self.dt_rank = math.ceil(cfg.d_model / 16) if cfg.dt_rank == "auto" else int(cfg.dt_rank)

        self.in_proj = nn.Linear(cfg.d_model, 2 * d_inner, bias=cfg.bias)  # -> x, z
        # Only the weight (d_inner, 1, d_conv) and bias matter; the convolution runs in ops.causal_conv.
        self.conv1d = nn.Conv1d(
            d_inner, d_inner, cfg.d_conv, groups=d_inner, padding=cfg.d_conv - 1, bias=cfg.conv_bias
        )
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * cfg.d_state, bias=False)  # -> Δ (low rank), B, C
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, cfg.d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)
        )
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, cfg.d_model, bias=cfg.bias)

        # Δ projection: weights keep the variance, bias makes softplus(Δ) log-uniform in [dt_min, dt_max].
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        with torch.no_grad():
            self.dt_proj.bias.copy_(inverse_softplus_dt(d_inner, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
        mark_parameters(self.A_log, self.D, self.dt_proj.bias, weight_decay=0.0, lr_scale=cfg.ssm_lr_scale)
        if cfg.ssm_lr_scale is not None:
            mark_parameters(self.dt_proj.weight, lr_scale=cfg.ssm_lr_scale)

    def _ssm_params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Input-dependent Δ (before bias), B, C from ``x (..., d_inner)``."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C  # Δ's bias is added inside the scan, in fp32

    def forward(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        """``hidden (B, L, d_model)``; ``mask (B, L)`` True for real tokens: padded steps are zeroed
        (see :class:`MambaBackbone`)."""
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # 2 x (B E L)
        keep = None
        if mask is not None:
            keep = mask[:, None, :].to(x.dtype)  # (B 1 L); bf16 under autocast stays bf16 for the kernels
            x = x * keep
        x = causal_conv1d(x, self.conv1d.weight[:, 0], self.conv1d.bias, "silu", self.cfg.backend)  # (B E L)
        if keep is not None:
            x = x * keep  # no input on padded steps: the SSM state stays zero until the first real token
        dt, B, C = self._ssm_params(x.transpose(1, 2))  # (B L E), (B L N), (B L N)
        y = selective_scan(
            x,
            dt.transpose(1, 2).contiguous(),  # (B E L)
            -torch.exp(self.A_log.float()),  # (E N), negative: a decaying state
            B.transpose(1, 2).contiguous(),  # (B N L)
            C.transpose(1, 2).contiguous(),  # (B N L)
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            backend=self.cfg.backend,
        )  # (B E L)
        return self.out_proj(y.transpose(1, 2))  # (B L d_model)

    def init_state(
        self, batch_size: int, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> dict[str, Tensor]:
        return {
            "conv": torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=dtype),  # (B E W)
            "ssm": torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype),  # (B E N)
        }

    def step(self, hidden: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One token ``hidden (B, d_model)`` -> ``(B, d_model)`` and the new state."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # 2 x (B E)
        x, conv = causal_conv1d_update(
            x, state["conv"], self.conv1d.weight[:, 0], self.conv1d.bias, "silu", self.cfg.backend
        )
        dt, B, C = self._ssm_params(x)  # (B E), (B N), (B N)
        A = -torch.exp(self.A_log.float())  # (E N)
        y, ssm = selective_state_update(
            state["ssm"], x, dt, A, B, C, self.D.float(), z, self.dt_proj.bias.float(), True, self.cfg.backend
        )  # (B E)
        return self.out_proj(y), {"conv": conv, "ssm": ssm}


class MambaBlock(PreNormBlock):
    """``x <- x + Dropout(Mamba(Norm(x)))``, mamba_ssm's Block names (norm, mixer)."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__(make_norm(cfg.norm, cfg.d_model, cfg.norm_eps), MambaMixer(cfg), cfg.dropout)


def rescale_residuals(out_projs: Iterable[nn.Linear], n_layers: int) -> None:
    """As mamba_ssm's ``_init_weights`` (rescale_prenorm_residual): residual outputs shrink with depth."""
    with torch.no_grad():
        for proj in out_projs:
            proj.weight /= math.sqrt(n_layers)


class MambaBackbone(Stack):
    """Stack of ``n_layers`` Mamba blocks (Decision Mamba's backbone); keyword arguments as :class:`MambaConfig`.

    ``mask`` (``(B, L)``, True = real token, padding on the left): every layer zeroes padded steps
    before and after its convolution, so the convolution sees zeros before the first real token
    and the SSM state is still zero when it arrives: real tokens get exactly the outputs of an
    unpadded sequence. Outputs at padded steps are finite but meaningless.

    State: per layer ``{"conv": (B, d_inner, d_conv), "ssm": (B, d_inner, d_state)}``: O(1) per token.
    """

    @options_from(MambaConfig)
    def __init__(self, d_model: int, **options: Any) -> None:
        cfg = MambaConfig(d_model=d_model, **options)
        # mamba_ssm's MixerModel names (layers, norm_f), so state dicts load both ways.
        blocks = (MambaBlock(cfg) for _ in range(cfg.n_layers))
        super().__init__(
            d_model, blocks, make_norm(cfg.norm, d_model, cfg.norm_eps), names=("layers", "norm_f")
        )
        self.config = cfg
        rescale_residuals((block.mixer.out_proj for block in self.layers), cfg.n_layers)
