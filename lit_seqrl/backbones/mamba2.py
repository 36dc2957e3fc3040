"""Mamba-2 backbone (Dao & Gu 2024, "Transformers are SSMs") and a Mamba-2 / attention hybrid.

The mixer has the parameter names, shapes and initialisation of ``mamba_ssm.modules.mamba2.Mamba2``
(in_proj -> [z, x, B, C, Δ], conv1d over [x, B, C], dt_bias, A_log, D, norm (gated RMSNorm),
out_proj), with one scalar decay per head of ``headdim`` channels. The math lives in
:mod:`lit_seqrl.ops.ssd` and :mod:`lit_seqrl.ops.causal_conv`; ``backend`` picks the official
kernels or PyTorch. ``step`` carries, per layer, the convolution's last ``d_conv`` inputs
``(B, conv_dim, d_conv)`` and the SSM state ``(B, nheads, headdim, d_state)``: O(1) per token.

``attn_layers`` replaces the layers it lists with the transformer's attention blocks
(:mod:`lit_seqrl.backbones.transformer`), which step with a KV cache: the Mamba-2 / attention
hybrid, registered as ``mamba2_hybrid`` (attention in the middle layer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones.attention import layer_indices
from lit_seqrl.backbones.base import PreNormBlock, Stack, mark_parameters, options_from
from lit_seqrl.backbones.mamba import Norm, inverse_softplus_dt, make_norm, rescale_residuals
from lit_seqrl.backbones.transformer import Block as AttentionBlock
from lit_seqrl.ops.backend import Backend
from lit_seqrl.ops.causal_conv import causal_conv1d, causal_conv1d_update
from lit_seqrl.ops.ssd import ssd, ssd_state_update


@dataclass
class Mamba2Config:
    d_model: int
    n_layers: int = 3
    d_state: int = 64  # N: state size per head channel (mamba_ssm's default is 128, for language models)
    d_conv: int = 4
    expand: int = 2  # d_inner = expand * d_model
    headdim: int | None = None  # P; None: gcd(d_inner, 64), i.e. 64 when it divides d_inner
    ngroups: int = 1  # heads share B and C within a group
    A_init_range: tuple[float, float] = (1.0, 16.0)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    chunk_size: int = 64  # SSD chunk length (forward only)
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj bias
    norm: Norm = "rmsnorm"
    norm_eps: float = 1e-5
    dropout: float = 0.0  # on each residual branch
    ssm_lr_scale: float | None = None  # learning-rate multiplier for A_log, D, dt_bias (never weight decay)
    backend: Backend = "auto"
    attn_layers: Sequence[int] | str = ()  # hybrid: these layers are attention blocks ("middle", "last")
    n_heads: int = 1  # attention layers' heads
    max_seq_len: int = 1024  # attention layers' KV-cache capacity for step


class GatedRMSNorm(nn.Module):
    """``RMSNorm(x · silu(z)) · weight``, normalised per group of ``group_size`` channels.

    mamba_ssm's ``RMSNormGated`` with ``norm_before_gate=False`` (its only parameter is ``weight``).
    """

    def __init__(self, d: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.group_size, self.eps = group_size, eps

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        h = (x.float() * F.silu(z.float())).unflatten(-1, (-1, self.group_size))  # (... G d/G)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h.flatten(-2) * self.weight.float()).to(x.dtype)


class Mamba2Mixer(nn.Module):
    """Mamba-2 mixer ``(B, L, d_model) -> (B, L, d_model)``, official parameter layout."""

    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.cfg = cfg
        d_inner = cfg.expand * cfg.d_model
        headdim = cfg.headdim or math.gcd(d_inner, 64)
        if d_inner % headdim:
            raise ValueError(f"headdim ({headdim}) must divide d_inner = expand * d_model = {d_inner}")
        nheads = d_inner // headdim
        if nheads % cfg.ngroups:
            raise ValueError(f"ngroups ({cfg.ngroups}) must divide the number of heads ({nheads})")
        self.d_inner, self.headdim, self.nheads = d_inner, headdim, nheads
        self.ngroups, self.d_state, self.d_conv = cfg.ngroups, cfg.d_state, cfg.d_conv
        self.conv_dim = d_inner + 2 * cfg.ngroups * cfg.d_state  # the convolution runs over [x, B, C]

        self.in_proj = nn.Linear(cfg.d_model, d_inner + self.conv_dim + nheads, bias=cfg.bias)  # -> z, xBC, Δ
        self.conv1d = nn.Conv1d(
            self.conv_dim,
            self.conv_dim,
            cfg.d_conv,
            groups=self.conv_dim,
            padding=cfg.d_conv - 1,
            bias=cfg.conv_bias,
        )  # only weight (conv_dim, 1, d_conv) and bias are used, by ops.causal_conv
        self.dt_bias = nn.Parameter(inverse_softplus_dt(nheads, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
        A = torch.empty(nheads).uniform_(*cfg.A_init_range)  # decay rates per head
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(nheads))
        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // cfg.ngroups, eps=1e-5)
        self.out_proj = nn.Linear(d_inner, cfg.d_model, bias=cfg.bias)
        mark_parameters(self.A_log, self.D, self.dt_bias, weight_decay=0.0, lr_scale=cfg.ssm_lr_scale)

    def _split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)  # z, xBC, Δ

    def _ssm_inputs(self, xBC: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(..., conv_dim)`` -> x ``(..., H, P)``, B and C ``(..., G, N)``."""
        gn = self.ngroups * self.d_state
        x, B, C = xBC.split([self.d_inner, gn, gn], dim=-1)
        heads, groups = (self.nheads, self.headdim), (self.ngroups, self.d_state)
        return x.unflatten(-1, heads), B.unflatten(-1, groups), C.unflatten(-1, groups)

    def forward(self, u: Tensor, mask: Tensor | None = None) -> Tensor:
        """``u (B, L, d_model)``; ``mask (B, L)`` True for real tokens: padded steps are zeroed
        (see :class:`Mamba2Backbone`)."""
        z, xBC, dt = self._split(self.in_proj(u))  # (B L E), (B L conv_dim), (B L H)
        keep = None
        if mask is not None:
            keep = mask[..., None].to(xBC.dtype)  # (B L 1); bf16 under autocast stays bf16 for the kernels
            xBC = xBC * keep
        w = self.conv1d.weight[:, 0]  # (conv_dim W)
        # A channel-last view of the wider in_proj output: its strides (d_in_proj) need not be
        # multiples of 8, so the dispatcher hands the kernel a contiguous copy when they are not.
        xBC = causal_conv1d(
            xBC.transpose(1, 2), w, self.conv1d.bias, "silu", self.cfg.backend
        )  # (B conv_dim L)
        xBC = xBC.transpose(1, 2)  # (B L conv_dim)
        if keep is not None:
            xBC = xBC * keep  # no input on padded steps: the SSM state stays zero until the first real token
        x, B, C = self._ssm_inputs(xBC)  # (B L H P), (B L G N), (B L G N)
        A = -torch.exp(self.A_log.float())  # (H), negative: a decaying state
        y = ssd(
            x,
            dt,
            A,
            B,
            C,
            self.cfg.chunk_size,
            D=self.D,
            dt_bias=self.dt_bias,
            dt_softplus=True,
            backend=self.cfg.backend,
        )  # (B L H P)
        return self.out_proj(self.norm(y.flatten(-2), z))  # (B L d_model)

    def init_state(
        self, batch_size: int, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> dict[str, Tensor]:
        like = {"device": device, "dtype": dtype}
        return {
            "conv": torch.zeros(batch_size, self.conv_dim, self.d_conv, **like),  # (B conv_dim W)
            "ssm": torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, **like),  # (B H P N)
        }

    def step(self, u: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One token ``u (B, d_model)`` -> ``(B, d_model)`` and the new state."""
        z, xBC, dt = self._split(self.in_proj(u))  # (B E), (B conv_dim), (B H)
        w = self.conv1d.weight[:, 0]
        xBC, conv = causal_conv1d_update(xBC, state["conv"], w, self.conv1d.bias, "silu", self.cfg.backend)
        x, B, C = self._ssm_inputs(xBC)  # (B H P), (B G N), (B G N)
        A = -torch.exp(self.A_log.float())  # (H)
        y, ssm = ssd_state_update(
            state["ssm"],
            x,
            dt,
            A,
            B,
            C,
            self.D,
            dt_bias=self.dt_bias,
            dt_softplus=True,
            backend=self.cfg.backend,
        )  # (B H P): the Triton state-update kernel when usable, as the official Mamba-2 step
        return self.out_proj(self.norm(y.flatten(-2), z)), {"conv": conv, "ssm": ssm}


class Mamba2Block(PreNormBlock):
    """``x <- x + Dropout(Mamba2(Norm(x)))``, mamba_ssm's Block names (norm, mixer)."""

    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__(make_norm(cfg.norm, cfg.d_model, cfg.norm_eps), Mamba2Mixer(cfg), cfg.dropout)


class Mamba2Backbone(Stack):
    """Stack of ``n_layers`` pre-norm Mamba-2 blocks and a final norm; keyword arguments as :class:`Mamba2Config`.

    ``mask`` (``(B, L)``, True = real token, padding on the left): every layer zeroes padded steps
    before and after its convolution, so real tokens get exactly the outputs of the unpadded
    sequence (the SSM state is still zero at the first real token).

    Hybrid: ``attn_layers`` (indices, ``"middle"`` or ``"last"``) makes those layers the
    transformer backbone's pre-LN attention blocks (``n_heads`` heads, MLP, no positional
    embedding: the Mamba-2 layers are position-aware; attention never sees padded keys). They step
    with a KV cache of ``max_seq_len`` tokens, the rest with O(1) state.

    State: per layer ``{"conv": (B, conv_dim, d_conv), "ssm": (B, nheads, headdim, d_state)}``, or the
    attention's ``{"k", "v", "pos"}`` cache.
    """

    @options_from(Mamba2Config)
    def __init__(self, d_model: int, **options: Any) -> None:
        cfg = Mamba2Config(d_model=d_model, **options)
        cfg.A_init_range = tuple(cfg.A_init_range)  # a YAML list becomes the tuple the dataclass promises
        attn = layer_indices(cfg.attn_layers, cfg.n_layers)
        blocks = (
            AttentionBlock(d_model, cfg.n_heads, cfg.dropout, max_seq_len=cfg.max_seq_len)
            if i in attn
            else Mamba2Block(cfg)
            for i in range(cfg.n_layers)
        )
        # mamba_ssm's MixerModel names (layers, norm_f), so state dicts load both ways.
        super().__init__(
            d_model, blocks, make_norm(cfg.norm, d_model, cfg.norm_eps), names=("layers", "norm_f")
        )
        self.config = cfg
        self.attn_layers = attn
        rescale_residuals((b.mixer.out_proj for b in self.layers if isinstance(b, Mamba2Block)), cfg.n_layers)
