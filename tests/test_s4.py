"""S4 / S4D kernels, the Cauchy kernel, and the conformance of the s4, s4d and hippo_rnn backbones."""

from __future__ import annotations

import warnings

import pytest
import torch

from lit_seqrl import build_backbone
from lit_seqrl.backbones.s4_kernel import DPLRKernel, dplr_kernel, dplr_step, row_times_power
from lit_seqrl.backbones.s4d import DiagonalKernel, s4d_kernel
from lit_seqrl.ops.backend import KernelUnavailableError
from lit_seqrl.ops.cauchy import cauchy, cauchy_chunked, cauchy_naive
from lit_seqrl.testing import check_backbone


@pytest.fixture(autouse=True)
def _quiet_missing_plugins():
    # Other built-in backbones may not be importable in every checkout; the registry warns about them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _dplr_params(H: int = 3, N: int = 16, rank: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """S4-initialised parameters in float64, perturbed so the low-rank term is not special."""
    torch.manual_seed(seed)
    Lambda, P, B, C, dt = (t.detach() for t in DPLRKernel(H, N, dt_min=0.01, dt_max=0.3).ssm())
    g = torch.Generator().manual_seed(seed)
    P = torch.cat([P, torch.randn((rank - 1, *P.shape[1:]), dtype=P.dtype, generator=g)])  # extra ranks
    P = P + 0.3 * torch.randn(P.shape, dtype=P.dtype, generator=g)
    B = B + 0.3 * torch.randn(B.shape, dtype=B.dtype, generator=g)
    cplx = (t.to(torch.complex128) for t in (Lambda, P, B, C))
    return (*cplx, dt.double())


def _kernel_by_powers(Lambda, P, B, C, dt, L: int) -> torch.Tensor:
    """K_k = C Ā^k B̄ (k < L) from the dense full-state bilinear discretisation, in float64."""
    full = lambda x: torch.cat([x, x.conj()], dim=-1)  # noqa: E731
    P_f = full(P)  # (r H N)
    A = torch.diag_embed(full(Lambda)) - torch.einsum("rhn,rhm->hnm", P_f, P_f.conj())
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    half = (dt / 2)[:, None, None] * A
    inv = torch.linalg.inv(eye - half)
    A_bar, B_bar = inv @ (eye + half), (inv @ (dt[:, None] * full(B))[..., None])[..., 0]
    out, x = [], B_bar  # (H N)
    for _ in range(L):
        out.append((full(C) * x).sum(-1))
        x = (A_bar @ x[..., None])[..., 0]
    K = torch.stack(out, dim=-1)
    assert K.imag.abs().max() < 1e-10  # conjugate pairs make it real
    return K.real


@pytest.mark.parametrize(("L", "rank"), [(1, 1), (2, 1), (15, 1), (64, 1), (257, 1), (64, 2)])
def test_s4_kernel_equals_explicit_powers(L: int, rank: int) -> None:
    params = _dplr_params(rank=rank)
    ref = _kernel_by_powers(*params, L)
    K = dplr_kernel(*params, L)
    assert K.shape == (3, L) and K.dtype == torch.float64
    assert ((K - ref).norm() / ref.norm()).item() < 1e-5
    # The float32 path (what training uses) stays close too.
    K32 = dplr_kernel(*(t.to(torch.complex64) if t.is_complex() else t.float() for t in params), L)
    assert ((K32.double() - ref).norm() / ref.norm()).item() < 1e-4


@pytest.mark.parametrize("rank", [1, 2])
def test_s4_recurrence_equals_convolution(rank: int) -> None:
    Lambda, P, B, C, dt = _dplr_params(rank=rank)
    u = torch.randn(2, 20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    K = dplr_kernel(Lambda, P, B, C, dt, 20)  # (H L)
    y_conv = torch.stack(
        [(K[:, : t + 1].flip(-1) * u[:, : t + 1].transpose(1, 2)).sum(-1) for t in range(20)], 1
    )
    x, ys = torch.zeros(2, 3, 8, dtype=torch.complex128), []
    for t in range(20):
        y, x = dplr_step(Lambda, P, B, C, dt, x, u[:, t])
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), y_conv, rtol=1e-10, atol=1e-10)


def test_s4_kernel_for_2L_starts_with_kernel_for_L() -> None:
    torch.manual_seed(0)
    kernel = DPLRKernel(4, 32)
    with torch.no_grad():
        K1, K2 = kernel(200), kernel(400)
    assert torch.allclose(K2[:, :200], K1, rtol=1e-4, atol=1e-5 * K1.abs().max().item())


def test_s4d_kernel_equals_explicit_powers() -> None:
    torch.manual_seed(0)
    Lambda, B, C, dt = (t.detach() for t in DiagonalKernel(3, 16, init="lin").ssm())
    K = s4d_kernel(Lambda, B, C, dt, 50)
    A_bar = torch.exp(dt[:, None] * Lambda)
    x, ref = (A_bar - 1) / Lambda * B, []
    for _ in range(50):
        ref.append(2 * (C * x).sum(-1).real)
        x = A_bar * x
    torch.testing.assert_close(K, torch.stack(ref, -1), rtol=1e-4, atol=1e-5)


def _complex(*shape: int, seed: int, dtype=torch.complex64) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def test_cauchy_chunked_equals_naive_with_gradients() -> None:
    v = _complex(2, 4, 16, seed=0).requires_grad_(True)
    w = _complex(4, 16, seed=1).requires_grad_(True)
    z = (3 * _complex(4, 37, seed=2)).requires_grad_(True)
    g = _complex(2, 4, 37, seed=3)
    ref = cauchy_naive(v, z, w)
    grads_ref = torch.autograd.grad(ref, (v, z, w), g)
    for chunk in (1, 7, 37, 100, None):
        out = cauchy_chunked(v, z, w, chunk_size=chunk)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        for a, b in zip(torch.autograd.grad(out, (v, z, w), g), grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # Real inputs get real gradients; gradcheck the analytic backward in float64.
    v64, w64 = _complex(3, 5, seed=4, dtype=torch.complex128), _complex(3, 5, seed=5, dtype=torch.complex128)
    z64 = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: cauchy_chunked(*a, chunk_size=4), (v64.requires_grad_(), z64, w64.requires_grad_())
    )


def test_cauchy_dispatch() -> None:
    v, z, w = _complex(2, 8, seed=0), _complex(2, 5, seed=1), _complex(2, 8, seed=2)
    torch.testing.assert_close(cauchy(v, z, w), cauchy_naive(v, z, w))
    torch.testing.assert_close(cauchy(v, z, w, backend="torch"), cauchy_naive(v, z, w))
    with pytest.raises(KernelUnavailableError):
        cauchy(v, z, w, backend="cuda")
    with pytest.raises(ValueError):
        cauchy(v, z, w, backend="triton")  # type: ignore[arg-type]


BACKBONES = [
    ("s4", {"n_layers": 2, "d_state": 8}),
    ("s4d", {"n_layers": 2, "d_state": 8}),
    ("s4d", {"n_layers": 1, "d_state": 8, "init": "lin"}),
    ("hippo_rnn", {"d_state": 8, "measure": "legs"}),
    ("hippo_rnn", {"d_state": 8, "measure": "legt", "theta": 6.0}),
    ("hippo_rnn", {"d_state": 8, "measure": "lagt", "theta": 4.0, "cell": "lstm"}),
]


@pytest.mark.parametrize(
    ("name", "kwargs"), BACKBONES, ids=lambda p: p if isinstance(p, str) else "-".join(map(str, p.values()))
)
def test_conformance(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    check_backbone(build_backbone(name, d_model=8, **kwargs))


@pytest.mark.parametrize("name", ["s4", "s4d", "hippo_rnn"])
def test_left_padding_is_a_fresh_start(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, d_model=8, d_state=8).eval()
    x = torch.randn(2, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, :4] = False
    with torch.no_grad():
        y = backbone(x, mask=mask)
        torch.testing.assert_close(y[0, 4:], backbone(x[:1, 4:])[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(y[1], backbone(x[1:])[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["s4", "s4d"])
def test_inference_mode_then_training(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, d_model=8, n_layers=2, d_state=8)
    x = torch.randn(2, 12, 8)
    with torch.inference_mode():
        y = backbone(x)
        state = backbone.init_state(2)
        for t in range(12):
            y_t, state = backbone.step(x[:, t], state)
        torch.testing.assert_close(y_t, y[:, -1], rtol=1e-4, atol=1e-4)
    backbone(x).sum().backward()  # nothing cached under inference_mode leaks into training
    assert all(p.grad is not None for p in backbone.parameters())
    with torch.no_grad():  # Δ changes: the recurrence follows, as nothing is cached
        for block in backbone.layers:
            block.mixer.kernel.log_dt.add_(0.5)
    check_backbone(backbone)


def test_ssm_parameters_are_marked() -> None:
    backbone = build_backbone("s4", d_model=8, n_layers=1, d_state=8, ssm_lr_scale=0.5)
    marked = {n for n, p in backbone.named_parameters() if getattr(p, "_optim", None)}
    assert marked == {
        f"layers.0.mixer.kernel.{n}" for n in ("log_Lambda_re", "Lambda_im", "P", "B", "log_dt")
    }
    assert backbone.layers[0].mixer.kernel.P._optim == {"weight_decay": 0.0, "lr_scale": 0.5, "lr_max": 1e-3}


@pytest.mark.parametrize("L", [0, 1, 2, 5, 20, 60, 300])
def test_row_times_power_matches_repeated_products(L):
    """C Ā^L by binary powers on the row (and matrix_power past ROW_POWER_MAX_L) against L products."""
    g = torch.Generator().manual_seed(0)
    M = torch.eye(6, dtype=torch.float64) * 0.95 + 0.05 * torch.randn(
        3, 6, 6, generator=g, dtype=torch.float64
    )
    row = torch.randn(3, 6, generator=g, dtype=torch.float64)
    want = row.clone()
    for _ in range(L):
        want = torch.einsum("hn,hnm->hm", want, M)
    torch.testing.assert_close(row_times_power(row, M, L), want)


def _legs_reference(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS built from its definition: eigenvalues of its normal part S = A + P Pᵀ and
    the moduli |v*B| of B in that eigenbasis (phase-free, so any eigen-solver agrees)."""
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    A = -torch.where(n[:, None] > n[None, :], r[:, None] * r[None, :], torch.diag(n + 1))  # (N N)
    P = torch.sqrt(n + 0.5)
    w, V = torch.linalg.eig(A + P[:, None] * P[None, :])  # (N), (N N) unit columns
    return w, (V.conj().T @ r.to(V.dtype)).abs()


@pytest.mark.parametrize("N", [16, 64])
def test_s4d_legs_takes_B_from_the_nplr_form_with_B_clip(N) -> None:
    Lambda, B, _, _ = (t.detach().to(torch.complex128) for t in DiagonalKernel(2, N, init="legs").ssm())
    assert torch.equal(B[0], B[1])  # every channel starts from the same SSM
    w, modulus = _legs_reference(N)
    for lam, b in zip(Lambda[0], B[0]):
        k = int(torch.argmin((w - lam).abs()))  # the reference eigenvalue this entry belongs to
        assert abs(w[k] - lam) < 1e-4
        if abs(b.imag) < 2.0 - 1e-6:  # unclipped: the modulus of v*B
            assert abs(b.abs() - modulus[k]) < 1e-4 * max(1.0, modulus[k])
        else:  # clipped, as the reference B_clip = 2: Im at the bound, Re untouched
            assert abs(abs(b.imag) - 2.0) < 1e-6
            assert b.real.abs() <= modulus[k] + 1e-5
    assert B.imag.abs().max() <= 2.0 + 1e-6
    if N == 64:
        assert (B.imag.abs() > 2.0 - 1e-6).any()  # the clip is active at this size
    # S4D-Lin and S4D-Inv keep B = 1
    _, B_inv, _, _ = DiagonalKernel(2, N, init="inv").ssm()
    assert torch.equal(B_inv.detach(), torch.ones_like(B_inv.detach()))


def test_s4_init_clips_the_imaginary_part_of_B() -> None:
    _, _, B, _, _ = (t.detach() for t in DPLRKernel(2, 64).ssm())
    assert B.imag.abs().max() <= 2.0 + 1e-6
    assert (B.imag.abs() > 2.0 - 1e-6).any()
    w, modulus = _legs_reference(64)
    Lambda = DPLRKernel(1, 64).ssm()[0].detach().to(torch.complex128)[0]
    for lam, b in zip(Lambda, B[0].to(torch.complex128)):
        k = int(torch.argmin((w - lam).abs()))
        if abs(b.imag) < 2.0 - 1e-6:
            assert abs(b.abs() - modulus[k]) < 1e-4 * max(1.0, modulus[k])


def test_s4d_legs_backbone_conforms() -> None:
    torch.manual_seed(0)
    check_backbone(build_backbone("s4d", d_model=8, n_layers=1, d_state=16, init="legs"))


@pytest.mark.parametrize("name", ["s4", "s4d"])
def test_s4_backbones_take_no_backend_option(name: str) -> None:
    # The Cauchy kernel has no fused version to choose yet: an option that changes nothing is refused.
    with pytest.raises(TypeError, match="backend"):
        build_backbone(name, d_model=8, n_layers=1, d_state=8, backend="cuda")


@pytest.mark.parametrize("name", ["s4", "s4d"])
def test_checkpoints_with_the_previous_parameter_names_load(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, d_model=8, n_layers=2, d_state=8).eval()
    old = {}  # the keys before the blocks held their norm and mixer: norms.i.*, layers.i.{kernel,D,out}
    for key, value in backbone.state_dict().items():
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "norm":
            key = ".".join(["norms", parts[1], *parts[3:]])
        elif parts[0] == "layers" and parts[2] == "mixer":
            key = ".".join(["layers", parts[1], *parts[3:]])
        old[key] = value.clone()
    assert "norms.0.weight" in old and "layers.1.kernel.C" in old
    torch.manual_seed(1)
    fresh = build_backbone(name, d_model=8, n_layers=2, d_state=8).eval()
    fresh.load_state_dict(old)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), backbone(x))
