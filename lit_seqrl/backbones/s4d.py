"""S4D backbone (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space Models").

Same block as S4 (:mod:`lit_seqrl.backbones.s4`) with a diagonal state matrix ``A = Λ``:
zero-order-hold discretisation ``Ā = exp(ΔΛ)``, ``B̄ = (exp(ΔΛ) - 1)/Λ · B``, and the kernel
``K_k = 2 Re Σ_n C_n B̄_n Ā_n^k`` is a Vandermonde product, no Cauchy kernel or Woodbury needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from lit_seqrl.backbones.base import options_from
from lit_seqrl.backbones.s4 import S4Config, S4Stack
from lit_seqrl.backbones.s4_kernel import SSMParameters, clip_imag
from lit_seqrl.ops.hippo import nplr, s4d_init

Init = Literal["lin", "inv", "legs"]


def s4d_discretize(Lambda: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-order hold: ``Λ, B (H, N/2)`` complex, ``dt (H,)`` -> ``Ā, B̄ (H, N/2)``."""
    dtLambda = dt[:, None] * Lambda  # (H N/2)
    A_bar = torch.exp(dtLambda)
    return A_bar, (A_bar - 1) / Lambda * B


def s4d_kernel(Lambda: Tensor, B: Tensor, C: Tensor, dt: Tensor, L: int) -> Tensor:
    """Vandermonde kernel ``K_k = 2 Re Σ_n C_n B̄_n exp(k Δ Λ_n)``, k < L: ``(H, N/2)`` -> ``(H, L)`` real."""
    _, B_bar = s4d_discretize(Lambda, B, dt)
    k = torch.arange(L, device=Lambda.device, dtype=dt.dtype)  # (L)
    vandermonde = torch.exp((dt[:, None] * Lambda)[..., None] * k)  # (H N/2 L)
    return 2 * torch.einsum("hn,hnl->hl", C * B_bar, vandermonde).real  # (H L)


def legs_input(N: int) -> Tensor:
    """S4D-LegS's ``B (N/2,)``: HiPPO-LegS's B in the NPLR eigenbasis, ``V*B``, matching the
    eigenvalues of :func:`lit_seqrl.ops.hippo.s4d_init` ("legs"), with ``Im`` clipped at
    ``B_CLIP`` as the reference S4D code. (S4D-Lin and S4D-Inv use ``B = 1``.)"""
    return clip_imag(nplr("legs", N)[2])


class DiagonalKernel(SSMParameters):
    """S4D's SSM for H channels (``A = Λ`` diagonal): kernel generator and ZOH recurrence."""

    def __init__(
        self,
        H: int,
        N: int = 64,
        init: Init = "inv",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        lr_scale: float | None = None,
    ) -> None:
        B = legs_input(N) if init == "legs" else torch.ones(N // 2, dtype=torch.complex64)  # (N/2)
        super().__init__(H, N, s4d_init(init, N), B, dt_min, dt_max, lr_scale)

    def ssm(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``Λ, B, C (H, N/2)`` complex and ``Δ (H,)``."""
        Lambda = torch.complex(-torch.exp(self.log_Lambda_re), self.Lambda_im)
        return Lambda, torch.view_as_complex(self.B), torch.view_as_complex(self.C), torch.exp(self.log_dt)

    def forward(self, L: int) -> Tensor:
        """The convolution kernel ``(H, L)``."""
        return s4d_kernel(*self.ssm(), L)

    def step(self, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``x' = Ā x + B̄ u``, ``y = 2 Re(C x')``: ``u (batch, H)`` -> ``y (batch, H)``, new state."""
        Lambda, B, C, dt = self.ssm()
        A_bar, B_bar = s4d_discretize(Lambda, B, dt)  # (H N/2)
        x = A_bar * torch.view_as_complex(state.contiguous()) + B_bar * u[..., None]  # (b H N/2)
        y = 2 * (C * x).sum(-1).real  # (b H)
        return y.to(u.dtype), torch.view_as_real(x)


@dataclass
class S4DConfig(S4Config):
    init: Init = "inv"  # S4D-Inv, S4D-Lin or S4D-LegS


class S4DBackbone(S4Stack):
    """S4's blocks with diagonal SSMs; keyword arguments as :class:`S4DConfig`."""

    @options_from(S4DConfig)
    def __init__(self, d_model: int, **options: Any) -> None:
        cfg = S4DConfig(d_model=d_model, **options)
        kernel = partial(
            DiagonalKernel, d_model, cfg.d_state, cfg.init, cfg.dt_min, cfg.dt_max, cfg.ssm_lr_scale
        )
        super().__init__(cfg, kernel)
