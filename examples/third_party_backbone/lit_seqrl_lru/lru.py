"""Linear Recurrent Unit (Orvieto et al., 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences") as a lit-seqrl backbone.

One LRU layer is a diagonal complex linear recurrence between two linear maps:

    x_k = Λ ⊙ x_{k-1} + γ ⊙ (B u_k)        Λ = exp(-exp(ν) + i·exp(θ)),  γ = sqrt(1 - |Λ|²)
    y_k = Re(C x_k) + D ⊙ u_k

``ν`` and ``θ`` are the parameters (exponential parametrisation keeps |Λ| < 1, i.e. stable) and
``γ`` normalises the input so the state's variance does not blow up as |Λ| → 1. Because Λ is
diagonal and time-invariant, ``forward`` computes all x_k at once with a doubling scan
(log2(L) steps) and ``step`` runs the recurrence itself; both agree to fp32 rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones import Stack, mark_parameters


def linear_scan(lam: Tensor, b: Tensor) -> Tensor:
    """x_k = lam ⊙ x_{k-1} + b_k from x_{-1} = 0, for all k at once.

    lam (N,) complex, b (B, L, N) complex -> x (B, L, N) complex. Hillis-Steele doubling: after
    round r, x_k sums the last 2^r inputs, each weighted by the power of lam it has decayed by.
    """
    x, power, offset = b, lam, 1
    L = b.shape[1]
    while offset < L:
        shifted = F.pad(x[:, :-offset], (0, 0, offset, 0))  # (B, L, N) x_{k-offset}, zeros before 0
        x = x + power * shifted
        power, offset = power * power, offset * 2
    return x


class LRU(nn.Module):
    """One LRU layer: (B, L, H) -> (B, L, H) with N complex states."""

    def __init__(
        self,
        d_model: int,
        d_state: int,
        r_min: float = 0.4,
        r_max: float = 0.99,
        max_phase: float = 2 * math.pi,
    ) -> None:
        super().__init__()
        H, N = d_model, d_state
        # |Λ| uniform on the ring [r_min, r_max] of the complex plane, phase uniform in [0, max_phase].
        u1, u2 = torch.rand(N), torch.rand(N)
        nu = -0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)  # (N,) -log|Λ|
        self.nu_log = nn.Parameter(torch.log(nu))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2 + 1e-4))
        self.B_re = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.B_im = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.C_re = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.C_im = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(H))
        # The recurrence is sensitive: no weight decay and half the learning rate (as in the paper).
        mark_parameters(self.nu_log, self.theta_log, weight_decay=0.0, lr_scale=0.5)

    def lam_gamma(self) -> tuple[Tensor, Tensor]:
        """Λ (N,) complex and the input normalisation γ (N,) real."""
        lam = torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))
        gamma = torch.sqrt(1 - lam.abs() ** 2)
        return lam, gamma

    def _input(self, u: Tensor, gamma: Tensor) -> Tensor:
        B = torch.complex(self.B_re, self.B_im)  # (N, H)
        return (u.to(B.dtype) @ B.transpose(0, 1)) * gamma  # (..., N)

    def _output(self, x: Tensor, u: Tensor) -> Tensor:
        C = torch.complex(self.C_re, self.C_im)  # (H, N)
        return (x @ C.transpose(0, 1)).real + self.D * u  # (..., H)

    def forward(self, u: Tensor, keep: Tensor | None = None) -> Tensor:
        """u (B, L, H), keep (B, L, 1) float (0 on padding) -> (B, L, H)."""
        lam, gamma = self.lam_gamma()
        b = self._input(u, gamma)  # (B, L, N)
        if keep is not None:
            b = b * keep  # padding (on the left) leaves the state at zero, as if the row began later
        return self._output(linear_scan(lam, b), u)

    def step(self, u: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """u (B, H), x (B, N) complex -> y (B, H), new x."""
        lam, gamma = self.lam_gamma()
        x = lam * x + self._input(u, gamma)  # (B, N)
        return self._output(x, u), x


class LRUBlock(nn.Module):
    """Pre-norm residual block: LayerNorm -> LRU -> GELU -> GLU projection -> dropout.

    Its step state is one ``(B, N, 2)`` float tensor (real, imaginary): the state contract wants
    plain float tensors, so the complex state is stored as a real view.
    """

    def __init__(self, d_model: int, d_state: int, dropout: float, **lru_kwargs: float) -> None:
        super().__init__()
        self.d_state = d_state
        self.norm = nn.LayerNorm(d_model)
        self.lru = LRU(d_model, d_state, **lru_kwargs)
        self.out = nn.Linear(d_model, 2 * d_model)
        self.drop = nn.Dropout(dropout)

    def _mix(self, y: Tensor) -> Tensor:
        return self.drop(F.glu(self.out(F.gelu(y)), dim=-1))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, L, H), mask (B, L) True for real tokens (padding leaves the state at zero)."""
        keep = None if mask is None else mask[..., None].to(x.dtype)  # (B, L, 1)
        return x + self._mix(self.lru(self.norm(x), keep))

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        return torch.zeros(batch_size, self.d_state, 2, device=device, dtype=dtype or torch.float32)

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        y, h = self.lru.step(self.norm(x), torch.view_as_complex(state.contiguous()))
        return x + self._mix(y), torch.view_as_real(h).to(state.dtype)


class LRUBackbone(Stack):
    """A stack of LRU blocks and a final LayerNorm: the lit-seqrl backbone ``lru``.

    ``Stack`` (from lit_seqrl.backbones) runs the blocks in order for ``forward`` and ``step``
    and keeps one state per block.

    Args:
        d_model: token width H.
        n_layers: number of LRU blocks.
        d_state: complex states N per layer (default: d_model).
        dropout: dropout after each block's projection.
        r_min, r_max: initial range of the eigenvalue moduli |Λ| (memory length).
        max_phase: initial eigenvalue phases are uniform in [0, max_phase].
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int = 2,
        d_state: int | None = None,
        dropout: float = 0.0,
        r_min: float = 0.4,
        r_max: float = 0.99,
        max_phase: float = 2 * math.pi,
    ) -> None:
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if not 0.0 <= r_min < r_max < 1.0:
            raise ValueError(f"need 0 <= r_min < r_max < 1, got r_min={r_min}, r_max={r_max}")
        N = d_state or d_model
        lru = {"r_min": r_min, "r_max": r_max, "max_phase": max_phase}
        blocks = (LRUBlock(d_model, N, dropout, **lru) for _ in range(n_layers))
        super().__init__(d_model, blocks, nn.LayerNorm(d_model), names=("blocks", "norm"))
        self.d_state = N
