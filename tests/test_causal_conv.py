"""Depthwise causal convolution: fast path and rolling-state update against the reference."""

from __future__ import annotations

import pytest
import torch

from lit_seqrl.ops.backend import KernelUnavailableError
from lit_seqrl.ops.causal_conv import KERNEL_MODULE, causal_conv1d, causal_conv1d_ref, causal_conv1d_update
from tests.helpers import KERNEL_DTYPES, KERNEL_TOL, require_kernel


def make_inputs(batch=2, d=6, L=20, W=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, d, L, generator=g), torch.randn(d, W, generator=g), torch.randn(d, generator=g)


@pytest.mark.parametrize("activation", [None, "silu", "swish"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_fast_path_matches_reference(activation, with_bias):
    x, w, b = make_inputs()
    b = b if with_bias else None
    leaves = [t.clone().requires_grad_(True) for t in (x, w)]
    ref_leaves = [t.clone().requires_grad_(True) for t in (x, w)]
    y = causal_conv1d(*leaves, b, activation, backend="torch")
    y_ref = causal_conv1d_ref(*ref_leaves, b, activation)
    torch.testing.assert_close(y, y_ref)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for a, r in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, r.grad)


def test_reference_is_causal_with_zero_history():
    x, w, b = make_inputs(L=8, W=3)
    y = causal_conv1d_ref(x, w, b)
    # t = 0 sees only x_0 (the earlier inputs are zeros), through the last tap
    torch.testing.assert_close(y[..., 0], w[:, -1] * x[..., 0] + b)
    x2 = x.clone()
    x2[..., 5:] += 1.0
    torch.testing.assert_close(causal_conv1d_ref(x2, w, b)[..., :5], y[..., :5])


@pytest.mark.parametrize("activation", [None, "silu"])
def test_update_matches_full_convolution(activation):
    x, w, b = make_inputs(L=9, W=4)
    y_full = causal_conv1d_ref(x, w, b, activation)
    state = torch.zeros(2, 6, 4)
    ys = []
    for t in range(x.shape[-1]):
        before = state.clone()
        y, new_state = causal_conv1d_update(x[..., t], state, w, b, activation)
        assert torch.equal(state, before), "the update must not modify the state in place"
        assert new_state.shape == (2, 6, 4) and torch.equal(new_state[..., -1], x[..., t])
        state = new_state
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, dim=-1), y_full)


def test_errors():
    x, w, b = make_inputs()
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(x, w, b, activation="relu")
    with pytest.raises(KernelUnavailableError):
        causal_conv1d(x, w, b, backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name", KERNEL_DTYPES)
def test_official_kernel_matches_reference(dtype_name):
    require_kernel("causal_conv1d", KERNEL_MODULE, "causal_conv1d")
    dtype, tol = getattr(torch, dtype_name), KERNEL_TOL[dtype_name]
    x, w, b = (t.cuda().to(dtype) for t in make_inputs(d=64, L=100))
    y_k = causal_conv1d(x, w, b, "silu", backend="cuda")
    torch.testing.assert_close(y_k.float(), causal_conv1d_ref(x.float(), w.float(), b.float(), "silu"), **tol)
    state = torch.zeros(2, 64, 4, device="cuda", dtype=dtype)
    y_t, new_state = causal_conv1d_update(x[..., 0], state, w, b, "silu", backend="cuda")
    torch.testing.assert_close(y_t.float(), y_k[..., 0].float(), **tol)
    assert not new_state.eq(0).all() and state.eq(0).all()
