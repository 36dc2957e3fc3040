"""Mamba-2 SSD: chunked PyTorch path and single-step update against the sequential reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_seqrl.ops.backend import KernelUnavailableError
from lit_seqrl.ops.ssd import KERNEL_MODULE, segsum, ssd, ssd_chunked, ssd_ref, ssd_state_update
from tests.helpers import KERNEL_DTYPES, KERNEL_TOL, require_kernel

FP32 = {"rtol": 1e-4, "atol": 1e-4}
GRAD = {"rtol": 6e-4, "atol": 2e-3}


def make_inputs(batch, L, heads, headdim, groups, n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(batch, L, heads, headdim, generator=g, dtype=dtype),
        "dt": torch.randn(batch, L, heads, generator=g, dtype=dtype) * 0.5 - 1.0,
        "A": -torch.exp(torch.randn(heads, generator=g, dtype=dtype)),
        "B": torch.randn(batch, L, groups, n, generator=g, dtype=dtype),
        "C": torch.randn(batch, L, groups, n, generator=g, dtype=dtype),
        "D": torch.randn(heads, generator=g, dtype=dtype),
        "z": torch.randn(batch, L, heads, headdim, generator=g, dtype=dtype),
        "dt_bias": torch.randn(heads, generator=g, dtype=dtype) * 0.1,
    }


CASES = [  # batch, L, heads, headdim, groups, n, chunk_size
    (2, 37, 4, 3, 2, 5, 8),  # L not a multiple of the chunk size, 2 heads per group
    (1, 64, 2, 4, 1, 8, 16),
    (2, 5, 2, 2, 1, 3, 64),  # one chunk longer than the sequence
    (1, 50, 4, 2, 4, 3, 7),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("extras", ["all", "none", "D_per_channel"])
def test_chunked_matches_reference_forward_and_grad(case, extras):
    batch, L, H, P, G, N, chunk = case
    inputs = make_inputs(batch, L, H, P, G, N)
    initial = torch.randn(batch, H, P, N) * 0.5
    if extras == "none":
        inputs = {k: inputs[k] for k in ("x", "dt", "A", "B", "C")}
        inputs["dt"] = F.softplus(inputs["dt"])  # positive without the softplus option
        kw = {"return_final_states": True}
    else:
        if extras == "D_per_channel":
            inputs["D"] = torch.randn(H, P)
        kw = {"dt_softplus": True, "initial_states": initial, "return_final_states": True}

    ref_leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y_ref, s_ref = ssd_ref(**ref_leaves, **kw)
    y, s = ssd_chunked(**leaves, chunk_size=chunk, **kw)
    torch.testing.assert_close(y, y_ref, **FP32)
    torch.testing.assert_close(s, s_ref, **FP32)

    w = torch.randn_like(y)
    ((y_ref * w).sum() + s_ref.square().sum()).backward()
    ((y * w).sum() + s.square().sum()).backward()
    for k in inputs:
        torch.testing.assert_close(
            leaves[k].grad, ref_leaves[k].grad, **GRAD, msg=lambda m, k=k: f"d{k}: {m}"
        )


def test_chunked_gradcheck_fp64():
    inputs = make_inputs(1, 9, 2, 2, 1, 3, dtype=torch.float64, seed=1)
    names = ("x", "dt", "A", "B", "C")
    leaves = [inputs[k].requires_grad_(True) for k in names]
    D, z, bias = (inputs[k].requires_grad_(True) for k in ("D", "z", "dt_bias"))

    def f(x, dt, A, B, C, D, z, bias):
        return ssd_chunked(x, dt, A, B, C, 4, D=D, z=z, dt_bias=bias, dt_softplus=True)

    assert torch.autograd.gradcheck(f, [*leaves, D, z, bias])


def test_segsum_is_exact_and_masked():
    a = -torch.rand(3, 6)
    s = segsum(a)  # (3 6 6)
    for t in range(6):
        for r in range(6):
            expected = a[:, r + 1 : t + 1].sum(-1) if r <= t else torch.full((3,), float("-inf"))
            torch.testing.assert_close(s[:, t, r], expected)


def test_large_dt_stays_finite():
    inputs = make_inputs(2, 70, 2, 4, 1, 8, seed=2)
    inputs["dt"] = torch.full_like(inputs["dt"], 500.0)
    inputs["dt"][:, 30:] = -500.0
    inputs["A"] = torch.tensor([-16.0, -1.0])
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y = ssd_chunked(**leaves, chunk_size=16, dt_softplus=True)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, ssd_ref(**inputs, dt_softplus=True), rtol=1e-4, atol=1e-3)
    y.square().sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in leaves.values())


def test_state_update_matches_reference():
    batch, L, H, P, G, N = 2, 10, 4, 3, 2, 5
    inputs = make_inputs(batch, L, H, P, G, N, seed=3)
    y_ref, s_ref = ssd_ref(**inputs, dt_softplus=True, return_final_states=True)
    state, ys = torch.zeros(batch, H, P, N), []
    for t in range(L):
        y, state = ssd_state_update(
            state,
            inputs["x"][:, t],
            inputs["dt"][:, t],
            inputs["A"],
            inputs["B"][:, t],
            inputs["C"][:, t],
            inputs["D"],
            inputs["z"][:, t],
            inputs["dt_bias"],
            dt_softplus=True,
        )
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, dim=1), y_ref, **FP32)
    torch.testing.assert_close(state, s_ref, **FP32)


def test_dispatch_rules():
    inputs = make_inputs(1, 12, 2, 2, 1, 3)
    y = ssd_chunked(**inputs, chunk_size=4, dt_softplus=True)
    torch.testing.assert_close(ssd(**inputs, chunk_size=4, dt_softplus=True, backend="torch"), y)
    torch.testing.assert_close(ssd(**inputs, chunk_size=4, dt_softplus=True), y)
    with pytest.raises(KernelUnavailableError):
        ssd(**inputs, chunk_size=4, backend="cuda")
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(**inputs, chunk_size=0)
    with pytest.raises(ValueError, match="groups"):
        ssd_ref(**dict(inputs, B=torch.randn(1, 12, 3, 3), C=torch.randn(1, 12, 3, 3)))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name", KERNEL_DTYPES)
def test_official_kernel_matches_chunked(dtype_name):
    require_kernel("mamba_ssm", KERNEL_MODULE, "mamba_ssm's SSD kernel")
    dtype, tol = getattr(torch, dtype_name), KERNEL_TOL[dtype_name]
    inputs = {k: v.cuda() for k, v in make_inputs(2, 300, 4, 16, 1, 32, seed=4).items()}
    for k in ("x", "dt", "B", "C", "z"):
        inputs[k] = inputs[k].to(dtype)
    y_k = ssd(**inputs, chunk_size=64, dt_softplus=True, backend="cuda")
    y_t = ssd(**inputs, chunk_size=64, dt_softplus=True, backend="torch")
    torch.testing.assert_close(y_k.float(), y_t.float(), **tol)
