"""HiPPO operators: NPLR form of LegS, discretisations, and online projections that converge in N."""

from __future__ import annotations

import math

import pytest
import torch

from lit_seqrl.ops.hippo import (
    discretize,
    hippo_online,
    hippo_reconstruct,
    hippo_step,
    nplr,
    s4d_init,
    transition,
)


@pytest.mark.parametrize("N", [8, 16, 64])
def test_legs_nplr_reconstructs_A(N: int) -> None:
    Lambda, P, B, V = nplr("legs", N, dtype=torch.complex128)
    assert (
        Lambda.shape == (N // 2,)
        and P.shape == (1, N // 2)
        and B.shape == (N // 2,)
        and V.shape == (N, N // 2)
    )
    assert torch.allclose(Lambda.real, torch.full_like(Lambda.real, -0.5)) and (Lambda.imag > 0).all()
    # Complete the conjugate pairs and rebuild A = V (Λ - P̃ P̃*) V*.
    V_f = torch.cat([V, V.conj()], dim=1)
    Lambda_f = torch.cat([Lambda, Lambda.conj()])
    P_f = torch.cat([P, P.conj()], dim=1)  # (1 N)
    A_rec = V_f @ (torch.diag(Lambda_f) - P_f.T @ P_f.conj()) @ V_f.conj().T
    A, B_hippo = transition("legs", N)
    assert (A_rec - A).abs().max().item() < 1e-8
    assert (V_f @ torch.cat([B, B.conj()]) - B_hippo).abs().max().item() < 1e-8
    assert (V_f.conj().T @ V_f - torch.eye(N, dtype=V_f.dtype)).abs().max().item() < 1e-8  # unitary


def test_transition_shapes_and_stability() -> None:
    for measure in ("legs", "legt", "lagt"):
        A, B = transition(measure, 12, theta=2.0)
        assert A.shape == (12, 12) and B.shape == (12,) and A.dtype == torch.float64
        assert (torch.linalg.eigvals(A).real < 0).all(), measure
    with pytest.raises(ValueError):
        transition("fourier", 4)  # type: ignore[arg-type]


def test_discretizations_agree_for_small_steps_and_zoh_is_exact() -> None:
    A, B = transition("legt", 8, theta=1.0)
    dt = 1e-4
    ref_A, ref_B = discretize(A, B, dt, "zoh")
    assert torch.allclose(ref_A, torch.linalg.matrix_exp(dt * A), atol=1e-12)
    # ZOH is exact for a constant input: B̄ = A^{-1}(e^{A dt} - I) B.
    assert torch.allclose(ref_B, torch.linalg.solve(A, (ref_A - torch.eye(8, dtype=A.dtype)) @ B), atol=1e-12)
    for method, order in [("bilinear", 3), ("forward_euler", 2), ("backward_euler", 2)]:
        A_bar, B_bar = discretize(A, B, dt, method)
        err = (A_bar - ref_A).abs().max().item()
        assert err < 10 * (dt * A.abs().max().item()) ** order, (method, err)
    # Batched steps (LegS: dt = 1/t per row) broadcast.
    A_bar, B_bar = discretize(*transition("legs", 8), torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64))
    assert A_bar.shape == (3, 8, 8) and B_bar.shape == (3, 8)


@pytest.mark.parametrize("method", ["bilinear", "forward_euler", "backward_euler", "zoh"])
def test_hippo_step_equals_discretized_update(method: str) -> None:
    g = torch.Generator().manual_seed(0)
    A, B = transition("legs", 8)
    c, f = torch.randn(3, 8, generator=g, dtype=A.dtype), torch.randn(3, generator=g, dtype=A.dtype)
    dt = torch.tensor([1.0, 0.5, 0.01], dtype=A.dtype)
    A_bar, B_bar = discretize(A, B, dt, method)  # type: ignore[arg-type]
    ref = (A_bar @ c[..., None])[..., 0] + f[:, None] * B_bar
    for lower in (False, True):
        assert torch.allclose(hippo_step(A, B, c, f, dt, method, lower=lower), ref, atol=1e-12)  # type: ignore[arg-type]


def _signal(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * 3 * x) + 0.5 * torch.cos(2 * math.pi * 7 * x + 1) + x**2


def _projection_error(measure: str, N: int, T: int = 2000) -> float:
    """Weighted RMS error at t = 1 of the online memory's reconstruction, under the measure."""
    dt = 1.0 / T
    theta = {"legs": 1.0, "legt": 0.5, "lagt": 0.05}[measure]
    f = _signal((torch.arange(T, dtype=torch.float64) + 0.5) * dt)  # midpoint samples
    c = hippo_online(f, measure, N, dt=dt, theta=theta)[-1]  # type: ignore[arg-type]
    x = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
    if measure == "legs":  # scale invariant: its time runs in samples
        weight = torch.ones_like(x)
        f_hat = hippo_reconstruct(c, "legs", x * T, float(T))
    else:
        weight = (x >= 1 - theta).double() if measure == "legt" else torch.exp(-(1 - x) / theta)
        f_hat = hippo_reconstruct(c, measure, x, 1.0, theta)  # type: ignore[arg-type]
    return math.sqrt(((f_hat - _signal(x)) ** 2 * weight).sum() / weight.sum())


@pytest.mark.parametrize(
    ("measure", "bounds"),
    # Measured (T = 2000): legs 0.52, 0.29, 2.9e-3 (discretisation-limited at N=32); legt 0.35, 3.5e-3,
    # 1.8e-4; lagt 0.17, 0.074, 0.015
    [("legs", (0.6, 0.35, 5e-3)), ("legt", (0.4, 6e-3, 4e-4)), ("lagt", (0.2, 0.09, 0.025))],
)
def test_online_projection_error_shrinks_with_N(measure: str, bounds: tuple[float, float, float]) -> None:
    errors = [_projection_error(measure, N) for N in (8, 16, 32)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < errors[0] / 5, errors
    for err, bound in zip(errors, bounds):
        assert err < bound, (measure, errors)


def test_s4d_inits() -> None:
    for init in ("lin", "inv", "legs"):
        Lambda = s4d_init(init, 16)  # type: ignore[arg-type]
        assert Lambda.shape == (8,) and Lambda.is_complex()
        assert torch.allclose(Lambda.real, torch.full((8,), -0.5))
    assert torch.allclose(s4d_init("lin", 8).imag, math.pi * torch.arange(4.0))
