"""MambaDM (Cao et al. 2024, "Mamba as Decision Maker: Exploring Multi-scale Sequence Modeling in
Offline Reinforcement Learning"): every layer fuses a global and a local view of the tokens.

What the paper says, and what we take from it:

* RL trajectories have *local* correlation (in an MDP the next state follows from the current
  state and action alone) and *global* correlation (each step relates to the long-term history).
  Its mixer, GLoMa (Global-Local fusion Mamba), extracts both per layer and fuses them. -> Each
  of our blocks has a global and a local branch and fuses them, inside a pre-norm residual block
  like Decision Mamba's.
* The global branch is a Mamba over the whole token sequence. -> ``MambaMixer`` of
  :mod:`lit_seqrl.backbones.mamba` (official parameter layout), unchanged.
* The paper's local branch is a Mamba over local sub-sequences of the trajectory (its eigenvalue
  analysis compares the Mamba matrices of both branches). No reference code is public, and the
  method text we could read does not pin down the split, so ``local`` offers two forms:

  - ``"mamba"``: our reading of the paper. The tokens are cut into non-overlapping sub-sequences
    of ``local_window`` tokens, counted from the first real token, and a Mamba mixer (the same
    :class:`~lit_seqrl.backbones.mamba.MambaMixer`, ``local_expand`` wide) runs on each from a zero
    state. Output ``t`` sees the tokens from the start of its sub-sequence up to ``t``. ``step``
    stays exact and O(1): it counts tokens and clears the local state at every sub-sequence start.
    A sliding window (every output re-scanning its last ``W`` tokens) would be the other reading;
    it costs ``W`` scans per token in ``forward`` and O(W) per ``step``, and is not implemented.
  - ``"conv"`` (default): a gated depthwise causal convolution over the last ``local_window``
    tokens (``in_proj -> conv -> silu``, gated by ``silu(z)``, ``-> out_proj``; Mamba's block
    with the SSM removed). Its receptive field is exactly ``local_window`` tokens for every
    output, whatever the phase, and it is the cheaper branch on CPU; Decision ConvFormer (Kim et
    al. 2024) showed that such a local filter alone captures the local Markov structure. It stays
    the default because our tables were made with it and the paper's exact form is unverified.

  The default window, 6 tokens, is DC's MuJoCo window: two (R, s, a) steps of the interleaved
  layout (three (s, a) steps without returns), so sub-sequences start on step boundaries.
* Fusion: the paper fuses the two feature streams per layer; the operator is a config choice here.
  ``"sum"`` adds the branches; ``"gate"`` mixes them with a per-token, per-channel gate
  ``a = σ(W [g; l] + b)``, ``y = a·g + (1-a)·l``, zero-initialised so it starts as the average and
  learns where to trust which scale. On Pendulum both scored the same within seed noise
  (``experiments/README.md``), so the default is the simpler ``"sum"``.
* The paper reports that a larger MambaDM does not help but more data does: our defaults stay
  DMamba-sized (3 layers).

``step`` carries per layer the global mixer's conv and SSM states and, for the local branch,
its last ``local_window`` inputs ``(B, E, W)`` (conv) or its own conv and SSM states and the
position inside the current sub-sequence (mamba): O(1) per token either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones.base import Stack, options_from
from lit_seqrl.backbones.mamba import MambaConfig, MambaMixer, make_norm, rescale_residuals
from lit_seqrl.ops.causal_conv import causal_conv1d, causal_conv1d_update

Fusion = Literal["gate", "sum"]
Local = Literal["conv", "mamba"]


@dataclass
class MambaDMConfig(MambaConfig):
    local_window: int = 6  # W: conv: tokens each output sees; mamba: length of each sub-sequence
    local_expand: int = 1  # local branch width = local_expand * d_model
    fusion: Fusion = "sum"
    local: Local = "conv"  # the local branch: gated causal conv, or Mamba over sub-sequences


class LocalMixer(nn.Module):
    """Short-range branch ``(B, L, d_model) -> (B, L, d_model)``: output ``t`` sees tokens ``t-W+1 .. t``."""

    def __init__(self, cfg: MambaDMConfig) -> None:
        super().__init__()
        d_inner = cfg.local_expand * cfg.d_model
        self.d_inner, self.window, self.backend = d_inner, cfg.local_window, cfg.backend
        self.in_proj = nn.Linear(cfg.d_model, 2 * d_inner, bias=cfg.bias)  # -> x, z (gate)
        bound = 1 / math.sqrt(cfg.local_window)  # nn.Conv1d's default init for a depthwise filter
        self.conv_weight = nn.Parameter(
            torch.empty(d_inner, cfg.local_window).uniform_(-bound, bound)
        )  # (E W)
        self.conv_bias = nn.Parameter(torch.empty(d_inner).uniform_(-bound, bound))  # (E)
        self.out_proj = nn.Linear(d_inner, cfg.d_model, bias=cfg.bias)

    def forward(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        """``hidden (B, L, d_model)``; ``mask (B, L)`` True for real tokens."""
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # 2 x (B E L)
        if mask is not None:
            # Padded steps contribute zeros, as before the start of an unpadded sequence (the
            # activations' dtype: bf16 under autocast stays bf16 for the kernels).
            x = x * mask[:, None, :].to(x.dtype)
        x = causal_conv1d(x, self.conv_weight, self.conv_bias, "silu", self.backend)  # (B E L)
        return self.out_proj((x * F.silu(z)).transpose(1, 2))  # (B L d_model)

    def init_state(
        self, batch_size: int, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> Tensor:
        return torch.zeros(batch_size, self.d_inner, self.window, device=device, dtype=dtype)  # (B E W)

    def step(self, hidden: Tensor, buf: Tensor) -> tuple[Tensor, Tensor]:
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # 2 x (B E)
        x, buf = causal_conv1d_update(x, buf, self.conv_weight, self.conv_bias, "silu", self.backend)
        return self.out_proj(x * F.silu(z)), buf


class LocalMambaMixer(nn.Module):
    """Mamba over non-overlapping sub-sequences ``(B, L, d_model) -> (B, L, d_model)``.

    Tokens are cut into sub-sequences of ``W = local_window`` tokens counted from the first real
    token (index ``p`` of a row with ``p`` padded steps): ``[p, p+W)``, ``[p+W, p+2W)``, ... The
    same Mamba mixer runs on each one from a zero state (its convolution buffer and SSM state),
    so output ``t`` sees the tokens from the start of its sub-sequence up to ``t``: between 1 and
    ``W`` tokens. ``step`` counts tokens and clears the mixer's state at every sub-sequence start.

    The count starts at the first token a call sees: a training or evaluation window's first
    step, or the episode's first token in recurrent evaluation. With ``W`` a multiple of the
    tokens per step, sub-sequences start on step boundaries in both; which steps share one shifts
    with the start. Training windows start at any step, so the model sees every grouping (with
    ``start_at_episode_start`` they start where recurrent evaluation does).
    """

    def __init__(self, cfg: MambaDMConfig) -> None:
        super().__init__()
        self.window = cfg.local_window
        self.mixer = MambaMixer(replace(cfg, expand=cfg.local_expand))  # its own width, shared Mamba code

    @property
    def out_proj(self) -> nn.Linear:
        return self.mixer.out_proj

    def forward(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        """``hidden (B, L, d_model)``; ``mask (B, L)`` True for real tokens, padding on the left."""
        B, L, D = hidden.shape
        W = self.window
        n = -(-L // W)  # sub-sequences per row, the last one possibly short
        if mask is not None:
            # Roll each row left by its padding p, so that its first real token sits at index 0 and
            # the padding at the end, after every real token (where causality makes it harmless).
            pad = L - mask.long().sum(-1)  # (B) padded steps, padding on the left
            src = (torch.arange(L, device=hidden.device) + pad[:, None]) % L  # (B L)
            hidden = hidden.gather(1, src[..., None].expand(B, L, D))
        x = F.pad(hidden, (0, 0, 0, n * W - L))  # (B nW D), zeros after the end: causal, harmless
        y = self.mixer(x.reshape(B * n, W, D)).reshape(B, n * W, D)[:, :L]  # each piece from zero state
        if mask is not None:
            dst = (torch.arange(L, device=hidden.device) - pad[:, None]) % L  # undo the roll
            y = y.gather(1, dst[..., None].expand(B, L, D))
        return y  # (B L D)

    def init_state(
        self, batch_size: int, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> dict[str, Tensor]:
        """The mixer's ``{"conv", "ssm"}`` and ``"phase" (B,)``: tokens seen in the current sub-sequence."""
        state = self.mixer.init_state(batch_size, device, dtype)
        state["phase"] = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B)
        return state

    def step(self, hidden: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        fresh = (state["phase"] == 0)[:, None, None]  # (B 1 1): this token starts a sub-sequence
        conv = state["conv"].masked_fill(fresh, 0.0)  # (B E d_conv)
        ssm = state["ssm"].masked_fill(fresh, 0.0)  # (B E N)
        y, new = self.mixer.step(hidden, {"conv": conv, "ssm": ssm})
        new["phase"] = (state["phase"] + 1) % self.window
        return y, new


class GlobalLocalBlock(nn.Module):
    """``x <- x + Fuse(GlobalMamba(Norm(x)), Local(Norm(x)))``."""

    def __init__(self, cfg: MambaDMConfig) -> None:
        super().__init__()
        if cfg.fusion not in ("gate", "sum"):
            raise ValueError(f"fusion must be 'gate' or 'sum', got {cfg.fusion!r}")
        if cfg.local not in ("conv", "mamba"):
            raise ValueError(f"local must be 'conv' or 'mamba', got {cfg.local!r}")
        self.fusion = cfg.fusion
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.global_mixer = MambaMixer(cfg)
        self.local_mixer = LocalMixer(cfg) if cfg.local == "conv" else LocalMambaMixer(cfg)
        if cfg.fusion == "gate":
            self.gate = nn.Linear(2 * cfg.d_model, cfg.d_model)
            nn.init.zeros_(self.gate.weight)  # a = 0.5 at init: start from the average of both scales
            nn.init.zeros_(self.gate.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def fuse(self, g: Tensor, loc: Tensor) -> Tensor:
        """Global ``g`` and local ``loc`` features ``(..., D)`` -> fused ``(..., D)``."""
        if self.fusion == "sum":
            return g + loc
        a = torch.sigmoid(self.gate(torch.cat([g, loc], dim=-1)))  # (... D) trust in the global view
        return a * g + (1 - a) * loc

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x (B, L, D)``; ``mask (B, L)`` True for real tokens: both branches see zeros at padding."""
        h = self.norm(x)
        g = self.global_mixer(h, mask)  # (B L D)
        loc = self.local_mixer(h, mask)  # (B L D)
        return x + self.dropout(self.fuse(g, loc))

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> dict[str, Any]:
        """``{"global": {"conv", "ssm"}, "local": ...}``; ``"local"`` is ``(B, E, local_window)``
        for ``local="conv"`` and ``{"conv", "ssm", "phase"}`` for ``local="mamba"``."""
        return {
            "global": self.global_mixer.init_state(batch_size, device, dtype),
            "local": self.local_mixer.init_state(batch_size, device, dtype),
        }

    def step(self, x_t: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        h = self.norm(x_t)
        g, glob = self.global_mixer.step(h, state["global"])
        loc, buf = self.local_mixer.step(h, state["local"])
        return x_t + self.dropout(self.fuse(g, loc)), {"global": glob, "local": buf}


class MambaDM(Stack):
    """Stack of ``n_layers`` global-local blocks and a final norm (MambaDM's backbone).

    Args:
        d_model: token width.
        n_layers: number of blocks.
        local_window: conv: tokens each local output sees (the current one and ``local_window - 1``
            before); mamba: the length of each sub-sequence. A multiple of the tokens per step (6
            fits 2 and 3) keeps sub-sequences on step boundaries.
        local_expand: local branch width in multiples of ``d_model``.
        fusion: ``"sum"`` or ``"gate"`` (learned per-token convex mix).
        local: ``"conv"`` (gated causal convolution over the last ``local_window`` tokens) or
            ``"mamba"`` (a Mamba restarted on every ``local_window``-token sub-sequence: the paper's
            local Mamba as we read it).
        Other arguments: the global Mamba mixer's, as :class:`lit_seqrl.backbones.mamba.MambaConfig`.

    ``mask`` (``(B, L)``, True = real token, padding on the left): both branches see zeros at
    padded steps, so real tokens get the outputs of the unpadded sequence.
    """

    @options_from(MambaDMConfig)
    def __init__(self, d_model: int, **options: Any) -> None:
        cfg = MambaDMConfig(d_model=d_model, **options)
        if cfg.local_window < 1 or cfg.local_expand < 1:
            raise ValueError(
                f"local_window and local_expand must be >= 1, got {cfg.local_window}, {cfg.local_expand}"
            )
        blocks = (GlobalLocalBlock(cfg) for _ in range(cfg.n_layers))
        norm = make_norm(cfg.norm, d_model, cfg.norm_eps)
        super().__init__(d_model, blocks, norm, names=("layers", "norm_f"))
        self.config = cfg
        out_projs = (proj for b in self.layers for proj in (b.global_mixer.out_proj, b.local_mixer.out_proj))
        rescale_residuals(out_projs, cfg.n_layers)

    def local_features(self, x: Tensor, layer: int = 0) -> Tensor:
        """The local branch's output ``(B, L, D)`` of block ``layer`` for that block's input ``x``."""
        block = self.layers[layer]
        return block.local_mixer(block.norm(x))
