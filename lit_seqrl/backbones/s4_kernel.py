"""The S4 kernel generator (Gu et al. 2022, "Efficiently Modeling Long Sequences with Structured State Spaces").

H independent SSMs ``x' = A x + B u, y = C x`` with a diagonal-plus-low-rank (DPLR) state matrix
``A = Λ - P P*`` (Λ diagonal, P of rank r; S4 ties Q = P), discretised with the bilinear rule at a
learned step Δ per channel. The same parameters give

* the convolution kernel ``K_k = C̄ Ā^k B̄`` (k < L) by the generating-function method
  (:func:`dplr_kernel`): C̃ = C(I - Ā^L), evaluation at the roots of unity, which the bilinear
  transform turns into a resolvent of A, Woodbury to peel off the low-rank term, Cauchy kernels for
  the diagonal part, then an inverse FFT;
* the recurrence ``x_k = Ā x_{k-1} + B̄ u_k`` (:func:`dplr_step`) in O(N) per channel and token.

The state is real, so its eigen-coordinates come in conjugate pairs; only one of each pair is stored
(``N/2`` complex numbers for state size N), the other is implied. Sums over the full state are then
``Σ_full = 2 Re Σ_half`` and the Cauchy kernels run over ``[w, w̄]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_seqrl.backbones.base import mark_parameters
from lit_seqrl.ops.backend import Backend
from lit_seqrl.ops.cauchy import cauchy
from lit_seqrl.ops.hippo import nplr

# S4 trains Λ, P, B and Δ at min(lr, 1e-3) (Gu et al. 2022, appendix on optimisation).
SSM_LR_MAX = 1e-3


def _full(x: Tensor) -> Tensor:
    """Append the implied conjugate half: ``(..., N/2) -> (..., N)``."""
    return torch.cat([x, x.conj()], dim=-1)


def real_form(Lambda: Tensor, P: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The full real system in coordinates ``y = [Re x; Im x]`` of the stored half ``x``.

    With ``x_f = [x; x̄] = U y``: ``A_r = U^{-1} A U = [[Re Λ, -Im Λ], [Im Λ, Re Λ]] - 2 Σ_r p pᵀ``,
    ``p = [Re P; Im P]``, ``B_r = [Re B; Im B]``, ``C_r = [2 Re C, -2 Im C]``. Dense work (Ā^L)
    then runs in real arithmetic, cheaper than complex at the same size.

    Args:
        Lambda: ``(H, N/2)``; P: ``(r, H, N/2)``; B, C: ``(H, N/2)`` complex.

    Returns:
        ``A_r (H, N, N)``, ``B_r (H, N)``, ``C_r (H, N)`` real.
    """
    re, im = torch.diag_embed(Lambda.real), torch.diag_embed(Lambda.imag)  # (H N/2 N/2)
    rot = torch.cat([torch.cat([re, -im], dim=-1), torch.cat([im, re], dim=-1)], dim=-2)  # (H N N)
    p = torch.cat([P.real, P.imag], dim=-1)  # (r H N)
    A_r = rot - 2 * torch.einsum("rhn,rhm->hnm", p, p)  # (H N N)
    B_r = torch.cat([B.real, B.imag], dim=-1)  # (H N)
    C_r = 2 * torch.cat([C.real, -C.imag], dim=-1)  # (H N)
    return A_r, B_r, C_r


#: Up to this L, :func:`row_times_power` applies binary powers to the row; above, ``matrix_power``
#: (the crossover measured on CPU: ``benchmarks/backbone_speed.py --before``, benchmarks/README.md).
ROW_POWER_MAX_L = 256


def row_times_power(row: Tensor, M: Tensor, L: int) -> Tensor:
    """``row · M^L``: ``row (H, N)``, ``M (H, N, N)`` -> ``(H, N)``, exact up to rounding.

    By binary powers, the row multiplied into each needed ``M^(2^k)`` as it is squared: the
    squarings a matrix power needs anyway, but no matrix-matrix product to combine them.
    """
    if L > ROW_POWER_MAX_L:
        return (row[:, None, :] @ torch.linalg.matrix_power(M, L))[:, 0]
    out, power = row[:, None, :], M  # (H 1 N), (H N N)
    while True:
        if L & 1:
            out = out @ power
        L >>= 1
        if not L:
            return out[:, 0]
        power = power @ power


def dplr_kernel(
    Lambda: Tensor, P: Tensor, B: Tensor, C: Tensor, dt: Tensor, L: int, backend: Backend = "auto"
) -> Tensor:
    """Convolution kernel ``K_k = C̄ Ā^k B̄``, k = 0..L-1, of the bilinear-discretised DPLR SSM.

    Args:
        Lambda: ``(H, N/2)``; P: ``(r, H, N/2)``; B, C: ``(H, N/2)`` complex; dt: ``(H,)`` real.
        L: kernel length (the input length: nothing is tied to a maximum length).

    Returns:
        ``K (H, L)`` real.
    """
    half = Lambda.shape[-1]
    r = P.shape[0]
    cdtype, rdtype = Lambda.dtype, dt.dtype

    # C̃ = C (I - Ā^L): truncating the generating function to L terms at the L-th roots of unity.
    A_r, _, C_r = real_form(Lambda, P, B, C)  # (H N N), (H N)
    eye = torch.eye(A_r.shape[-1], dtype=rdtype, device=A_r.device)
    half_dtA = (dt / 2)[:, None, None] * A_r  # (H N N)
    A_bar = torch.linalg.solve(eye - half_dtA, eye + half_dtA)  # (H N N) bilinear, real coordinates
    CA = row_times_power(C_r, A_bar, L)  # (H N) = C Ā^L, real coordinates
    C_tilde = C - torch.complex(CA[:, :half], -CA[:, half:]) / 2  # (H N/2) back to the stored half

    # Roots of unity ω_l = e^{-2πi l/L}, l = 0..L/2 (K is real, so irfft needs only these).
    # ω = -1 (even L) is the bilinear map's pole at infinity: handled in closed form below.
    n_freq = L // 2 + 1
    n_cauchy = n_freq - 1 if L % 2 == 0 else n_freq
    angle = -2 * math.pi * torch.arange(n_cauchy, dtype=torch.float64, device=dt.device) / L
    omega = torch.polar(torch.ones_like(angle), angle).to(cdtype)  # (Lc)
    # The bilinear transform: (I - Ā ω)^{-1} B̄ = 2/(1+ω) · (z - A)^{-1} B with z = (2/Δ)(1-ω)/(1+ω).
    z = (2 / dt).to(cdtype)[:, None] * ((1 - omega) / (1 + omega))[None, :]  # (H Lc)

    # Resolvent R(z) = (z - Λ)^{-1} through Cauchy kernels; Woodbury for (z - Λ + P P*)^{-1}:
    #   C̃ (z - A)^{-1} B = k00 - k01 (I + k11)^{-1} k10,  k_ab = Σ_n left_a,n right_b,n / (z - Λ_n)
    left = torch.cat([C_tilde[None], P.conj()], dim=0)  # (r+1 H N/2): C̃, P*
    right = torch.cat([B[None], P], dim=0)  # (r+1 H N/2): B, P
    v = left[:, None] * right[None, :]  # (r+1 r+1 H N/2)
    k = cauchy(_full(v), z, _full(Lambda), backend=backend)  # (r+1 r+1 H Lc)
    if r == 1:
        k_hat = k[0, 0] - k[0, 1] * k[1, 0] / (1 + k[1, 1])  # (H Lc)
    else:
        k11 = k[1:, 1:].permute(2, 3, 0, 1)  # (H Lc r r)
        eye = torch.eye(r, dtype=cdtype, device=k.device)
        corr = torch.linalg.solve(eye + k11, k[1:, 0].permute(1, 2, 0)[..., None])[..., 0]  # (H Lc r)
        k_hat = k[0, 0] - (k[0, 1:].permute(1, 2, 0) * corr).sum(-1)  # (H Lc)
    k_hat = k_hat * (2 / (1 + omega))  # (H Lc)
    if n_cauchy < n_freq:  # ω = -1: (I + Ā)^{-1} B̄ = Δ B / 2, no low-rank term survives
        nyquist = (dt * (C_tilde * B).sum(-1).real).to(cdtype)  # (H) = Δ/2 · Σ_full C̃ B
        k_hat = torch.cat([k_hat, nyquist[:, None]], dim=-1)  # (H L/2+1)
    return torch.fft.irfft(k_hat, n=L).to(rdtype)  # (H L)


def dplr_step(
    Lambda: Tensor, P: Tensor, B: Tensor, C: Tensor, dt: Tensor, x: Tensor, u: Tensor
) -> tuple[Tensor, Tensor]:
    """One bilinear step ``x' = (I - Δ/2 A)^{-1}((I + Δ/2 A) x + Δ B u)``, ``y = C x'``, in O(N).

    Only the stored half of a conjugate-symmetric state is updated; the low-rank terms ``P* x``
    sum over both halves (``2 Re``), and ``(I - Δ/2 A)^{-1}`` is applied by Woodbury around the
    diagonal ``D = (1 - Δ/2 Λ)^{-1}``.

    Args:
        Lambda: ``(H, N/2)``; P: ``(r, H, N/2)``; B, C: ``(H, N/2)`` complex; dt: ``(H,)`` real.
        x: ``(batch, H, N/2)`` complex state; u: ``(batch, H)`` real input.

    Returns:
        ``y (batch, H)`` real and the new state ``(batch, H, N/2)``.
    """
    half_dt = (dt / 2)[:, None]  # (H 1)
    s = 2 * torch.einsum("rhn,bhn->brh", P.conj(), x).real  # (b r H) P* x
    Ax = Lambda * x - torch.einsum("rhn,brh->bhn", P, s.to(x.dtype))  # (b H N/2)
    rhs = x + half_dt * Ax + (2 * half_dt * B) * u[..., None]  # (b H N/2)
    D = 1 / (1 - half_dt * Lambda)  # (H N/2)
    Drhs = D * rhs  # (b H N/2)
    G = 2 * torch.einsum("ihn,hn,jhn->hij", P.conj(), D, P).real  # (H r r) P* D P
    t = 2 * torch.einsum("rhn,bhn->bhr", P.conj(), Drhs).real  # (b H r) P* D rhs
    eye = torch.eye(P.shape[0], dtype=G.dtype, device=G.device)
    M = eye + half_dt[..., None] * G  # (H r r) the Woodbury capacitance matrix
    t = t / M[..., 0] if P.shape[0] == 1 else torch.linalg.solve(M, t[..., None])[..., 0]  # (b H r)
    x = Drhs - D * half_dt * torch.einsum("rhn,bhr->bhn", P, t.to(x.dtype))  # (b H N/2)
    y = 2 * (C * x).sum(-1).real  # (b H)
    return y, x


#: Bound on |Im(V*B)| of the HiPPO-LegS input matrix in NPLR coordinates, as the reference S4
#: code's ``B_clip``: a few entries (11 of 32 at N = 64) reach |Im| ~ 40, and clipping them
#: "can help with stability" by its account.
B_CLIP = 2.0


def clip_imag(B: Tensor, bound: float | None = B_CLIP) -> Tensor:
    """``B`` (complex) with its imaginary part clamped to ``[-bound, bound]`` (unchanged if ``bound`` is None)."""
    if bound is None:
        return B
    return torch.complex(B.real, B.imag.clamp(-bound, bound))


class SSMParameters(nn.Module):
    """The parameters S4 and S4D share, for H channels of N/2 stored complex modes, and the zero state.

    Re Λ is stored as ``log(-Re Λ)``, so it stays negative whatever the optimiser does; complex
    B and C as real views (``(..., 2)``); Δ as ``log Δ``, log-uniform in ``[dt_min, dt_max]``.
    As in S4: no weight decay (and optionally a smaller learning rate) on Λ, B and Δ.

    Args:
        Lambda: ``(N/2,)`` complex initial eigenvalues; B: ``(N/2,)`` complex initial input matrix,
            both repeated over the H channels. C starts ``N(0, 1)`` complex (``E|C_n|^2 = 1``).
    """

    def __init__(
        self, H: int, N: int, Lambda: Tensor, B: Tensor, dt_min: float, dt_max: float, lr_scale: float | None
    ) -> None:
        super().__init__()
        self.H, self.N, self.lr_scale = H, N, lr_scale
        self.log_Lambda_re = nn.Parameter(torch.log(-Lambda.real).repeat(H, 1))  # (H N/2)
        self.Lambda_im = nn.Parameter(Lambda.imag.repeat(H, 1))  # (H N/2)
        self.B = nn.Parameter(torch.view_as_real(B.repeat(H, 1)))  # (H N/2 2)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, N // 2, dtype=torch.complex64)))  # (H N/2 2)
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (H)
        self.mark_ssm(self.log_Lambda_re, self.Lambda_im, self.B, self.log_dt)

    def mark_ssm(self, *params: nn.Parameter) -> None:
        """No weight decay, learning rate ``min(lr_scale * lr, SSM_LR_MAX)``: S4's optimiser settings."""
        mark_parameters(*params, weight_decay=0.0, lr_scale=self.lr_scale, lr_max=SSM_LR_MAX)

    def init_state(
        self, batch_size: int, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> Tensor:
        """Zero state ``(batch, H, N/2, 2)``: the complex state as a real view (batch first, resettable)."""
        return torch.zeros(batch_size, self.H, self.N // 2, 2, device=device, dtype=dtype or torch.float32)


class DPLRKernel(SSMParameters):
    """S4's SSM for H channels, as a kernel generator (``forward(L)``) and a recurrence.

    With Q tied to P, the Hermitian part of ``A = Λ - P P*`` is negative definite (Re Λ < 0), so
    every channel stays stable whatever the optimiser does.
    """

    def __init__(
        self,
        H: int,
        N: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        lr_scale: float | None = None,
        backend: Backend = "auto",
    ) -> None:
        Lambda, P, B, _ = nplr("legs", N)  # (N/2), (1 N/2), (N/2), HiPPO-LegS init
        super().__init__(
            H, N, Lambda, clip_imag(B), dt_min, dt_max, lr_scale
        )  # B clipped as the reference S4
        self.backend = backend
        self.P = nn.Parameter(torch.view_as_real(P[:, None].repeat(1, H, 1)))  # (r H N/2 2)
        self.mark_ssm(self.P)

    def ssm(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``Λ (H, N/2)``, ``P (r, H, N/2)``, ``B``, ``C (H, N/2)`` complex and ``Δ (H,)``."""
        Lambda = torch.complex(-torch.exp(self.log_Lambda_re), self.Lambda_im)
        P, B, C = (torch.view_as_complex(p) for p in (self.P, self.B, self.C))
        return Lambda, P, B, C, torch.exp(self.log_dt)

    def forward(self, L: int) -> Tensor:
        """The convolution kernel ``(H, L)`` for inputs of length ``L``."""
        return dplr_kernel(*self.ssm(), L, backend=self.backend)

    def step(self, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``u (batch, H)``, state ``(batch, H, N/2, 2)`` -> ``y (batch, H)``, new state."""
        y, x = dplr_step(*self.ssm(), torch.view_as_complex(state.contiguous()), u)
        return y.to(u.dtype), torch.view_as_real(x)
