"""Mamba's selective scan: chunked PyTorch path and single-step update against the sequential reference."""

from __future__ import annotations

import pytest
import torch

from lit_seqrl.ops.backend import KernelUnavailableError
from lit_seqrl.ops.linear_scan import scan_
from lit_seqrl.ops.selective_scan import (
    SCAN_MODULE,
    selective_scan,
    selective_scan_chunked,
    selective_scan_ref,
    selective_state_update,
)
from tests.helpers import KERNEL_DTYPES, KERNEL_TOL, require_kernel

FP32 = {"rtol": 1e-4, "atol": 1e-4}  # tighter than the official kernel test (rtol 6e-4, atol 2e-3)
GRAD = {"rtol": 6e-4, "atol": 2e-3}


def make_inputs(batch, d, n, L, groups=None, seed=0, dtype=torch.float32, delta_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    bc_shape = (batch, n, L) if groups is None else (batch, groups, n, L)
    return {
        "u": torch.randn(batch, d, L, generator=g, dtype=dtype),
        "delta": delta_scale * torch.randn(batch, d, L, generator=g, dtype=dtype) * 0.5 - 1.0,
        "A": -torch.exp(torch.randn(d, n, generator=g, dtype=dtype)),  # negative, as -exp(A_log)
        "B": torch.randn(*bc_shape, generator=g, dtype=dtype),
        "C": torch.randn(*bc_shape, generator=g, dtype=dtype),
        "D": torch.randn(d, generator=g, dtype=dtype),
        "z": torch.randn(batch, d, L, generator=g, dtype=dtype),
        "delta_bias": torch.randn(d, generator=g, dtype=dtype) * 0.1,
    }


SHAPES = [  # batch, d, n, L, groups, chunk_size
    (2, 8, 4, 37, None, None),  # L not a multiple of the chunk
    (1, 6, 3, 64, 2, 16),  # grouped B/C
    (2, 4, 16, 1, None, None),  # a single step
    (1, 5, 4, 130, None, 7),  # odd chunk size, many chunks
]
OPTIONS = [  # D, z, delta_bias, delta_softplus
    (True, True, True, True),  # Mamba's configuration
    (False, False, False, False),
    (True, False, False, True),
    (False, True, True, False),
]


def select(inputs, D, z, bias, softplus):
    kw = dict(inputs)
    if not softplus:  # Δ must be positive for a decaying state
        kw["delta"] = torch.nn.functional.softplus(kw["delta"])
    for name, on in (("D", D), ("z", z), ("delta_bias", bias)):
        if not on:
            kw.pop(name)
    return kw


@pytest.mark.parametrize("implementation", ["function", "graph"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", OPTIONS)
def test_chunked_matches_reference_forward_and_grad(shape, options, implementation):
    batch, d, n, L, groups, chunk = shape
    D, z, bias, softplus = options
    inputs = select(make_inputs(batch, d, n, L, groups), D, z, bias, softplus)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y_ref, h_ref = selective_scan_ref(**inputs, delta_softplus=softplus, return_last_state=True)
    y, h = selective_scan_chunked(
        **leaves,
        delta_softplus=softplus,
        return_last_state=True,
        chunk_size=chunk,
        implementation=implementation,
    )
    torch.testing.assert_close(y, y_ref, **FP32)
    torch.testing.assert_close(h, h_ref, **FP32)

    ref_leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    out_ref, last_ref = selective_scan_ref(**ref_leaves, delta_softplus=softplus, return_last_state=True)
    w = torch.randn_like(y)  # a generic loss that also reaches the last state
    ((out_ref * w).sum() + last_ref.square().sum()).backward()
    ((y * w).sum() + h.square().sum()).backward()
    for name in inputs:
        torch.testing.assert_close(
            leaves[name].grad, ref_leaves[name].grad, **GRAD, msg=lambda m, k=name: f"d{k}: {m}"
        )


@pytest.mark.parametrize("L, chunk", [(60, None), (60, 60), (97, 10), (1024, None)])
def test_training_sizes_match_reference(L, chunk):
    """The sizes the benchmarks time (one chunk for wide steps, many for long L), official tolerances."""
    batch, d = (9, 64) if L < 100 else (1, 32)  # 9·64·16 elements per step: wide, step by step
    inputs = make_inputs(batch, d, 16, L, seed=4)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    ref_leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y, h = selective_scan_chunked(**leaves, delta_softplus=True, chunk_size=chunk, return_last_state=True)
    y_ref, h_ref = selective_scan_ref(**ref_leaves, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(y, y_ref, **GRAD)
    torch.testing.assert_close(h, h_ref, **GRAD)
    w = torch.randn_like(y)
    ((y * w).sum() + h.square().sum()).backward()  # the last state's gradient enters the adjoint too
    ((y_ref * w).sum() + h_ref.square().sum()).backward()
    for name in inputs:
        torch.testing.assert_close(
            leaves[name].grad, ref_leaves[name].grad, **GRAD, msg=lambda m, k=name: f"d{k}: {m}"
        )


@pytest.mark.parametrize("grad", [False, True])
def test_forward_only_and_training_paths_agree(grad):
    """Wide steps without autograd take the plain recurrence, with autograd the Function: same outputs."""
    inputs = make_inputs(9, 64, 16, 30, seed=8)
    y_ref, h_ref = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
    leaves = {k: v.clone().requires_grad_(grad) for k, v in inputs.items()}
    y, h = selective_scan_chunked(**leaves, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(y, y_ref, **FP32)
    torch.testing.assert_close(h, h_ref, **FP32)
    assert y.requires_grad == grad


def test_buffers_in_use_are_not_reused():
    """Two graphs alive at once, one backward twice (retain_graph): reused workspace must not leak between them."""
    first, second = make_inputs(4, 64, 16, 64, seed=5), make_inputs(4, 64, 16, 64, seed=6)  # 1 MiB states
    grads = []
    for inputs in (first, second):
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        out = selective_scan_chunked(**leaves, delta_softplus=True)
        grads.append((leaves, out))
    for _, out in reversed(grads):
        out.square().sum().backward(retain_graph=True)
    leaves, out = grads[0]
    once = leaves["delta"].grad.clone()
    selective_scan_chunked(**second, delta_softplus=True)  # a third call between the two backward passes
    out.square().sum().backward()
    torch.testing.assert_close(leaves["delta"].grad, 2 * once)
    for inputs, (leaves, _) in zip((first, second), grads):
        ref_leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        selective_scan_ref(**ref_leaves, delta_softplus=True).square().sum().backward()
        grad = leaves["u"].grad / (2 if inputs is first else 1)
        torch.testing.assert_close(grad, ref_leaves["u"].grad, **GRAD)


@pytest.mark.parametrize("T, c", [(5, 1), (4, 3), (1, 6)])
@pytest.mark.parametrize("adjoint", [False, True])
def test_linear_scan_matches_a_loop(T, c, adjoint):
    g = torch.Generator().manual_seed(7)
    a = torch.rand(T, c, 3, 2, generator=g, dtype=torch.float64)
    x = torch.randn(T, c, 3, 2, generator=g, dtype=torch.float64)
    flat_a, flat_x = (
        a.transpose(0, 1).reshape(T * c, 3, 2),
        x.transpose(0, 1).reshape(T * c, 3, 2),
    )  # time order
    h, want = torch.zeros(3, 2, dtype=torch.float64), []
    steps = range(T * c - 1, -1, -1) if adjoint else range(T * c)
    for t in steps:
        if adjoint:  # g_t = a_{t+1} g_{t+1} + x_t
            h = flat_x[t] + (flat_a[t + 1] * h if t + 1 < T * c else 0)
        else:
            h = flat_a[t] * h + flat_x[t]
        want.append(h)
    want = torch.stack(want[::-1] if adjoint else want).reshape(c, T, 3, 2).transpose(0, 1)
    torch.testing.assert_close(scan_(a, x.clone(), adjoint=adjoint), want)


def test_chunked_gradcheck_fp64():
    inputs = make_inputs(1, 3, 2, 11, dtype=torch.float64, seed=1)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    leaves = [inputs[k].requires_grad_(True) for k in names]

    def f(*args):
        return selective_scan_chunked(*args, delta_softplus=True, chunk_size=4)

    assert torch.autograd.gradcheck(f, leaves)


def test_dtypes_follow_the_kernel():
    inputs = make_inputs(1, 4, 2, 9)
    y, h = selective_scan_chunked(
        **{k: v.to(torch.bfloat16) for k, v in inputs.items()}, return_last_state=True
    )
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32  # computed in fp32, output in u's dtype
    y64 = selective_scan_chunked(**{k: v.double() for k, v in inputs.items()})
    assert y64.dtype == torch.float64


def test_large_delta_times_A_stays_finite():
    """Δ·A in the thousands: exp(ΔA) underflows to 0, nothing may overflow or turn into NaN."""
    inputs = make_inputs(2, 8, 16, 100, seed=2)
    inputs["delta"] = torch.full_like(inputs["delta"], 300.0)  # softplus(300) = 300
    inputs["A"] = -torch.arange(1, 17, dtype=torch.float32).repeat(8, 1) * 10  # down to -160
    inputs["delta"][:, :, 50:] = -300.0  # and a stretch of tiny steps
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y = selective_scan_chunked(**leaves, delta_softplus=True, chunk_size=16)
    y_ref = selective_scan_ref(**inputs, delta_softplus=True)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-3)
    y.square().sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in leaves.values())


def test_default_chunk_size_and_validation():
    inputs = make_inputs(1, 4, 2, 300)
    y_ref = selective_scan_ref(**inputs, delta_softplus=True)
    torch.testing.assert_close(selective_scan_chunked(**inputs, delta_softplus=True), y_ref, **FP32)
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan_chunked(**inputs, chunk_size=0)
    bad = dict(inputs, B=inputs["B"][0])  # (N, L): not a supported layout
    with pytest.raises(ValueError, match="B and C"):
        selective_scan_ref(**bad)


@pytest.mark.parametrize("groups", [None, 2])
def test_state_update_matches_reference(groups):
    batch, d, n, L = 2, 6, 4, 12
    inputs = make_inputs(batch, d, n, L, groups, seed=3)
    y_ref, h_ref = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
    state = torch.zeros(batch, d, n)
    ys = []
    for t in range(L):
        y, new_state = selective_state_update(
            state,
            inputs["u"][..., t],
            inputs["delta"][..., t],
            inputs["A"],
            inputs["B"][..., t],
            inputs["C"][..., t],
            inputs["D"],
            inputs["z"][..., t],
            inputs["delta_bias"],
            dt_softplus=True,
        )
        assert new_state is not state and new_state.shape == (batch, d, n)
        state = new_state
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, dim=-1), y_ref, **FP32)
    torch.testing.assert_close(state, h_ref, **FP32)


def test_dispatch_rules():
    inputs = make_inputs(1, 4, 2, 10)
    y = selective_scan_chunked(**inputs, delta_softplus=True)
    torch.testing.assert_close(selective_scan(**inputs, delta_softplus=True, backend="torch"), y)
    torch.testing.assert_close(selective_scan(**inputs, delta_softplus=True, backend="auto"), y)
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**inputs, backend="triton")
    with pytest.raises(KernelUnavailableError):  # no kernel here, or CPU tensors: either way a clear error
        selective_scan(**inputs, backend="cuda")


# ---- GPU: the official kernel against our PyTorch path (needs a CUDA device and mamba-ssm) ----


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name", KERNEL_DTYPES)
def test_official_kernel_matches_chunked(dtype_name):
    require_kernel("mamba_ssm", SCAN_MODULE, "mamba_ssm's selective scan kernel")
    dtype, tol = getattr(torch, dtype_name), KERNEL_TOL[dtype_name]
    inputs = make_inputs(2, 64, 16, 300, seed=4)
    inputs = {k: v.cuda() for k, v in inputs.items()}
    for k in ("u", "delta", "B", "C", "z"):
        inputs[k] = inputs[k].to(dtype)
    leaves_k = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    leaves_t = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y_k, h_k = selective_scan(**leaves_k, delta_softplus=True, return_last_state=True, backend="cuda")
    y_t, h_t = selective_scan(**leaves_t, delta_softplus=True, return_last_state=True, backend="torch")
    torch.testing.assert_close(y_k.float(), y_t.float(), **tol)
    torch.testing.assert_close(h_k.float(), h_t.float(), **tol)
    if dtype == torch.float32:  # gradients: fp32 only, with the official test's looser weight tolerance
        g = torch.randn_like(y_t)
        (y_k * g).sum().backward()
        (y_t * g).sum().backward()
        for k in inputs:
            torch.testing.assert_close(leaves_k[k].grad, leaves_t[k].grad, rtol=1e-3, atol=1e-2)
