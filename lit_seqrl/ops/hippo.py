"""HiPPO operators (Gu et al. 2020) and the NPLR form of HiPPO-LegS that initialises S4 (Gu et al. 2022).

Sign convention (that of the S4 paper): the memory ``c(t) ∈ R^N`` of a signal ``f`` follows

    dc/dt = A c + B f              LegT (sliding window θ), LagT (exponential decay, time scale θ)
    dc/dt = (1/t) (A c + B f)      LegS (uniform over the whole history [0, t]: scale invariant)

so ``A`` here is minus the ``A`` of the HiPPO paper's ``dc/dt = -A c + B f``. Coefficients are taken
against orthonormal bases, so that ``f(x) ≈ Σ_n c_n(t) g_n(t, x)`` with :func:`hippo_basis`:

    LegS  g_n = √(2n+1) P_n(2x/t - 1)             x ∈ [0, t]
    LegT  g_n = √(2n+1) P_n(2(x - t)/θ + 1)       x ∈ [t - θ, t]
    LagT  g_n = L_n((t - x)/θ)                    x ≤ t, weighted by e^{-(t-x)/θ}/θ

(P_n Legendre, L_n Laguerre polynomials).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Measure = Literal["legs", "legt", "lagt"]
Method = Literal["bilinear", "zoh", "forward_euler", "backward_euler"]
MEASURES = ("legs", "legt", "lagt")

# Generalised bilinear transform: α = 0 forward Euler, 1 backward Euler, 1/2 bilinear (Tustin).
_GBT_ALPHA = {"forward_euler": 0.0, "backward_euler": 1.0, "bilinear": 0.5}


def transition(
    measure: Measure,
    N: int,
    theta: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Continuous-time HiPPO operators.

    Args:
        measure: ``"legs"``, ``"legt"`` or ``"lagt"``.
        N: memory size (number of basis functions).
        theta: window length (LegT) or time scale (LagT), in the units of time of ``dt``; LegS has none.

    Returns:
        ``A (N, N)``, ``B (N,)`` with the sign convention of the module docstring.
    """
    n = torch.arange(N, dtype=dtype, device=device)
    r = torch.sqrt(2 * n + 1)  # (N) the √(2n+1) that makes the Legendre bases orthonormal
    lower = n[:, None] >= n[None, :]  # (N N) k <= n
    if measure == "legs":
        A = -torch.where(n[:, None] > n[None, :], r[:, None] * r[None, :], torch.zeros((), dtype=dtype))
        A = A - torch.diag(n + 1)  # (N N) lower triangular, diagonal -(n+1)
        return A, r.clone()
    if measure == "legt":
        sign = torch.where(lower, 1.0, (-1.0) ** (n[:, None] - n[None, :]))  # (N N)
        return -(r[:, None] * r[None, :]) * sign / theta, r / theta
    if measure == "lagt":
        return -lower.to(dtype) / theta, torch.ones(N, dtype=dtype, device=device) / theta
    raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")


def discretize(
    A: Tensor, B: Tensor, dt: float | Tensor, method: Method = "bilinear"
) -> tuple[Tensor, Tensor]:
    """Discretise ``dc/dt = A c + B f`` with step ``dt`` into ``c_k = Ā c_{k-1} + B̄ f_k``.

    ``f_k`` is the input held over the step ((k-1)dt, k dt]; the bilinear rule is second order when
    it is sampled at the step's midpoint. For LegS at step ``k`` (1-based) pass ``dt = 1/k``: its
    ``1/t`` factor turns into a step of ``1/k`` in units of samples.

    Args:
        A: ``(N, N)``; B: ``(N,)``.
        dt: a float or a tensor ``(...)`` of step sizes (one system per entry).
        method: ``"bilinear"``, ``"zoh"``, ``"forward_euler"`` or ``"backward_euler"``.

    Returns:
        ``Ā (..., N, N)``, ``B̄ (..., N)``.
    """
    N = A.shape[-1]
    dt = torch.as_tensor(dt, dtype=A.dtype, device=A.device)
    if method == "zoh":
        # exp([[A, B], [0, 0]] dt) = [[e^{A dt}, A^{-1}(e^{A dt} - I) B], [0, 1]]: no inverse of A needed.
        M = A.new_zeros((*dt.shape, N + 1, N + 1))
        M[..., :N, :N] = A * dt[..., None, None]
        M[..., :N, N] = B * dt[..., None]
        E = torch.linalg.matrix_exp(M)  # (... N+1 N+1)
        return E[..., :N, :N], E[..., :N, N]
    if method not in _GBT_ALPHA:
        raise ValueError(f"method must be one of {('zoh', *_GBT_ALPHA)}, got {method!r}")
    alpha = _GBT_ALPHA[method]
    eye = torch.eye(N, dtype=A.dtype, device=A.device)
    dtA = dt[..., None, None] * A  # (... N N)
    left = eye - alpha * dtA
    A_bar = torch.linalg.solve(left, eye + (1 - alpha) * dtA)  # (... N N)
    B_bar = torch.linalg.solve(left, (dt[..., None] * B)[..., None])[..., 0]  # (... N)
    return A_bar, B_bar


def hippo_step(
    A: Tensor,
    B: Tensor,
    c: Tensor,
    f: Tensor,
    dt: float | Tensor,
    method: Method = "bilinear",
    lower: bool = False,
) -> Tensor:
    """One step ``c_k = Ā c_{k-1} + B̄ f_k`` without forming ``Ā`` (one solve, not two).

    For a per-row time-varying step (LegS, ``dt = 1/t``) this is the cheap path; ``lower=True``
    uses a triangular solve, valid for LegS and LagT whose ``A`` is lower triangular.

    Args:
        A: ``(N, N)``; B: ``(N,)``; c: ``(..., N)``; f: ``(...)``; dt: float or ``(...)``.

    Returns:
        ``(..., N)``, equal to ``Ā c + B̄ f`` from :func:`discretize`.
    """
    if method == "zoh":  # needs the matrix exponential anyway
        A_bar, B_bar = discretize(A, B, dt, method)
        return (A_bar @ c[..., None])[..., 0] + f[..., None] * B_bar
    if method not in _GBT_ALPHA:
        raise ValueError(f"method must be one of {('zoh', *_GBT_ALPHA)}, got {method!r}")
    alpha = _GBT_ALPHA[method]
    dt = torch.as_tensor(dt, dtype=A.dtype, device=A.device)
    dt = dt.expand(c.shape[:-1])[..., None]  # (... 1)
    rhs = c + (1 - alpha) * dt * (c @ A.T) + dt * B * f[..., None]  # (... N)
    if alpha == 0:
        return rhs
    left = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device) - alpha * dt[..., None] * A  # (... N N)
    if lower:
        return torch.linalg.solve_triangular(left, rhs[..., None], upper=False)[..., 0]
    return torch.linalg.solve(left, rhs[..., None])[..., 0]


def legs_initial(f0: Tensor, N: int) -> Tensor:
    """LegS memory after the first sample: the projection of a constant history, ``f0 e_0``.

    The LegS ODE is singular at ``t = 0``; its only consistent start is ``A c + B f = 0``, i.e.
    ``c = e_0 f0``. Starting from zeros instead leaves an error that decays only like ``1/t``.

    Args:
        f0: ``(...)`` first input. Returns ``(..., N)``.
    """
    c = f0.new_zeros((*f0.shape, N))
    c[..., 0] = f0
    return c


def hippo_online(
    f: Tensor, measure: Measure, N: int, dt: float = 1.0, theta: float = 1.0, method: Method = "bilinear"
) -> Tensor:
    """Reference online HiPPO recurrence over a sampled signal (plain loop, any dtype).

    Args:
        f: ``(..., T)`` samples, ``f_k`` held over ((k-1)dt, k dt] (k = 1..T), ideally taken at midpoints.
        dt: sample spacing (LegT/LagT); LegS is scale invariant and ignores it.

    Returns:
        ``c (..., T, N)``: ``c[..., k-1, :]`` are the coefficients at time ``t = k dt``.
    """
    A, B = transition(measure, N, theta, dtype=f.dtype, device=f.device)
    if measure != "legs":
        A_bar, B_bar = discretize(A, B, dt, method)  # (N N), (N)
    cs = []
    c = f.new_zeros((*f.shape[:-1], N))  # (... N)
    for k in range(1, f.shape[-1] + 1):
        f_k = f[..., k - 1]
        if measure == "legs":
            if k == 1:
                c = legs_initial(f_k, N)
                cs.append(c)
                continue
            A_bar, B_bar = discretize(A, B, 1.0 / k, method)
        c = c @ A_bar.T + f_k[..., None] * B_bar
        cs.append(c)
    return torch.stack(cs, dim=-2)


def hippo_basis(measure: Measure, N: int, x: Tensor, t: float, theta: float = 1.0) -> Tensor:
    """The orthonormal basis functions ``g_n(t, x)`` of the module docstring.

    Args:
        x: ``(...)`` past times (``x <= t``). Returns ``(..., N)``; zero outside the measure's support.
    """
    if measure == "legs":
        s, inside = 2 * x / t - 1, (x >= 0) & (x <= t)
    elif measure == "legt":
        s, inside = 2 * (x - t) / theta + 1, (x >= t - theta) & (x <= t)
    elif measure == "lagt":
        return _laguerre((t - x) / theta, N) * (x <= t)[..., None]
    else:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    n = torch.arange(N, dtype=x.dtype, device=x.device)
    return _legendre(s, N) * torch.sqrt(2 * n + 1) * inside[..., None]


def hippo_reconstruct(c: Tensor, measure: Measure, x: Tensor, t: float, theta: float = 1.0) -> Tensor:
    """``f(x) ≈ Σ_n c_n g_n(t, x)``: ``c (..., N)``, ``x (M,)`` -> ``(..., M)``."""
    return c @ hippo_basis(measure, c.shape[-1], x, t, theta).T


def _legendre(s: Tensor, N: int) -> Tensor:
    # Bonnet's recurrence (n+1) P_{n+1} = (2n+1) s P_n - n P_{n-1}: stable on [-1, 1].
    P = [torch.ones_like(s), s]
    for n in range(1, N - 1):
        P.append(((2 * n + 1) * s * P[n] - n * P[n - 1]) / (n + 1))
    return torch.stack(P[:N], dim=-1)  # (... N)


def _laguerre(y: Tensor, N: int) -> Tensor:
    # (n+1) L_{n+1} = (2n+1-y) L_n - n L_{n-1}
    L = [torch.ones_like(y), 1 - y]
    for n in range(1, N - 1):
        L.append(((2 * n + 1 - y) * L[n] - n * L[n - 1]) / (n + 1))
    return torch.stack(L[:N], dim=-1)  # (... N)


def nplr(
    measure: Measure = "legs", N: int = 64, dtype: torch.dtype = torch.complex64
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Normal-plus-low-rank form of HiPPO-LegS, ``A = V (Λ - P̃ P̃*) V*`` (S4, Gu et al. 2022).

    LegS satisfies ``A + P Pᵀ = S`` with ``P_n = √(n + 1/2)`` and ``S = -I/2 + (skew-symmetric)``,
    a normal matrix: ``S = V Λ V*`` with ``V`` unitary and ``Re Λ = -1/2``. Its eigenvalues come in
    conjugate pairs (eigenvectors ``v``, ``v̄``), so a real system needs only the half with
    ``Im Λ > 0``; the other half is implied. Computed in float64, then cast.

    Args:
        N: state size, even.
        dtype: complex dtype of the results.

    Returns:
        ``Λ (N/2,)``, ``P̃ = V* P`` as ``(1, N/2)`` (rank 1), ``B̃ = V* B (N/2,)``, ``V (N, N/2)``.
        With ``V_f = [V, V̄]``, ``Λ_f = [Λ, Λ̄]``, ``P̃_f = [P̃, conj P̃]``:
        ``A = V_f (diag Λ_f - P̃_fᵀ conj(P̃_f)) V_f*`` exactly (up to float64 rounding).
    """
    if measure != "legs":
        raise NotImplementedError(f"nplr is implemented for measure='legs' only, got {measure!r}")
    if N % 2:
        raise ValueError(f"N must be even (conjugate pairs), got {N}")
    A, B = transition("legs", N, dtype=torch.float64)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)  # (N)
    S = A + P[:, None] * P[None, :]  # (N N) = -I/2 + skew
    skew = S + 0.5 * torch.eye(N, dtype=torch.float64)
    # -i·skew is Hermitian: eigh gives real ω and an exactly unitary V, so Λ = -1/2 + iω.
    omega, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # (N), (N N)
    keep = omega > 0  # one of each conjugate pair; eigh sorts ascending, so pairs are ±ω
    Lambda = torch.complex(torch.full_like(omega[keep], -0.5), omega[keep])  # (N/2)
    V = V[:, keep]  # (N N/2)
    P_t = V.conj().T @ P.to(torch.complex128)  # (N/2)
    B_t = V.conj().T @ B.to(torch.complex128)  # (N/2)
    return Lambda.to(dtype), P_t[None].to(dtype), B_t.to(dtype), V.to(dtype)


def s4d_init(init: Literal["lin", "inv", "legs"], N: int) -> Tensor:
    """Diagonal initialisations of S4D (Gu et al. 2022b): ``Λ (N/2,)`` complex64, one per conjugate pair.

    * ``lin``: ``Λ_n = -1/2 + iπn`` (Fourier-like frequencies);
    * ``inv``: ``Λ_n = -1/2 + i (N/π)(N/(2n+1) - 1)`` (approximates S4-LegS's spectrum);
    * ``legs``: the diagonal part ``Λ`` of the NPLR form of LegS (S4D-LegS).
    """
    n = torch.arange(N // 2, dtype=torch.float64)
    if init == "lin":
        imag = math.pi * n
    elif init == "inv":
        imag = N / math.pi * (N / (2 * n + 1) - 1)
    elif init == "legs":
        return nplr("legs", N)[0]
    else:
        raise ValueError(f"init must be 'lin', 'inv' or 'legs', got {init!r}")
    return torch.complex(torch.full_like(imag, -0.5), imag).to(torch.complex64)
