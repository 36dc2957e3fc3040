"""Depthwise causal 1-d convolution, the short convolution in front of Mamba's SSM.

    y[d, t] = act(bias[d] + Σ_k weight[d, k] · x[d, t - (W - 1) + k])        (x = 0 before t = 0)

* :func:`causal_conv1d_ref`: a sum of W shifted copies, the readable definition.
* :func:`causal_conv1d`: ``causal_conv1d.causal_conv1d_fn`` when usable (``backend`` rule of
  :mod:`lit_seqrl.ops.backend`), else PyTorch's grouped ``conv1d`` on a left-padded input.
* :func:`causal_conv1d_update`: one token on a rolling state holding the last W inputs.

The kernel's own rules (its TORCH_CHECKs), checked before every call by
:func:`conv_kernel_issue` / :func:`conv_update_kernel_issue`: inputs and weights in fp32, fp16
or bf16, the bias in the weight's dtype, the state in the input's dtype, widths 2 to 4 only.
Its channel-last layout (``x.stride(1) == 1``, as a transposed ``(B, L, D)`` tensor) also needs
``D % 8 == 0`` and strides divisible by 8; :func:`kernel_layout` hands it any other input as a
contiguous ``(B, D, L)`` tensor, the layout the official Mamba block passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_seqrl.ops.backend import Backend, dtype_issue, first_issue, probe, use_kernel

KERNEL_MODULE = "causal_conv1d"
KERNEL_EXTENSIONS = ("causal_conv1d_cuda",)  # the compiled part, imported by the package at call time
KERNEL_WIDTHS = range(2, 5)
ACTIVATIONS = (None, "silu", "swish")


def causal_conv1d_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """Reference depthwise causal convolution.

    Args:
        x: ``(B, D, L)``; weight: ``(D, W)``; bias: ``(D,)``; activation: None, "silu" or "swish".

    Returns:
        ``(B, D, L)``.
    """
    _check_activation(activation)
    W, L = weight.shape[-1], x.shape[-1]
    x_pad = F.pad(x, (W - 1, 0))  # (B D L+W-1): zeros stand for the inputs before t = 0
    y = sum(weight[:, k, None] * x_pad[..., k : k + L] for k in range(W))  # (B D L)
    if bias is not None:
        y = y + bias[:, None]
    return _activate(y, activation)


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Depthwise causal convolution through the fastest available path; shapes as :func:`causal_conv1d_ref`."""
    _check_activation(activation)
    if use_kernel(
        backend,
        KERNEL_MODULE,
        x,
        weight,
        bias,
        extensions=KERNEL_EXTENSIONS,
        issue=lambda: conv_kernel_issue(x, weight, bias),
    ):
        return probe(KERNEL_MODULE).causal_conv1d_fn(kernel_layout(x), weight, bias, activation=activation)
    W = weight.shape[-1]
    y = F.conv1d(F.pad(x, (W - 1, 0)), weight[:, None, :], bias, groups=weight.shape[0])  # (B D L)
    return _activate(y, activation)


def causal_conv1d_update(
    x_t: Tensor,
    conv_state: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor]:
    """One token of the causal convolution.

    Args:
        x_t: ``(B, D)`` new input.
        conv_state: ``(B, D, W)``, the last W inputs, oldest first (zeros at the start).
        weight, bias, activation: as in :func:`causal_conv1d_ref`.

    Returns:
        ``(y_t (B, D), new_state (B, D, W))``: the state shifted left by one with ``x_t`` last.
        ``conv_state`` itself is not modified (the official kernel updates in place).
    """
    _check_activation(activation)
    if use_kernel(
        backend,
        KERNEL_MODULE,
        x_t,
        conv_state,
        weight,
        bias,
        extensions=KERNEL_EXTENSIONS,
        issue=lambda: conv_update_kernel_issue(x_t, conv_state, weight, bias),
    ):
        new_state = conv_state.clone()
        y = probe(KERNEL_MODULE).causal_conv1d_update(x_t, new_state, weight, bias, activation)
        return y, new_state
    new_state = torch.cat([conv_state[..., 1:], x_t[..., None].to(conv_state.dtype)], dim=-1)  # (B D W)
    y = (new_state * weight).sum(-1)  # (B D)
    if bias is not None:
        y = y + bias
    return _activate(y, activation).to(x_t.dtype), new_state


def conv_kernel_issue(x: Tensor, weight: Tensor, bias: Tensor | None) -> str | None:
    """Why ``causal_conv1d_fn`` would reject ``x (B, D, L)``, ``weight (D, W)``, ``bias (D,)`` (None if it would not).

    Layout is not an issue: :func:`kernel_layout` fixes it.
    """
    return first_issue(
        _width_issue(weight),
        dtype_issue("x", x),
        dtype_issue("weight", weight),
        _bias_issue(weight, bias),
    )


def conv_update_kernel_issue(
    x_t: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None
) -> str | None:
    """Why ``causal_conv1d_update`` would reject these arguments (None if it would not)."""
    return first_issue(
        _width_issue(weight),
        dtype_issue("x", x_t),
        dtype_issue("weight", weight),
        _bias_issue(weight, bias),
        None
        if conv_state.dtype == x_t.dtype
        else f"conv_state has dtype {conv_state.dtype}, the input {x_t.dtype} (they must match)",
    )


def kernel_layout(x: Tensor) -> Tensor:
    """``x (B, D, L)`` in a layout the kernel accepts.

    Channel-first (time contiguous) passes as it is; so does a channel-last view meeting the
    kernel's rules (``D % 8 == 0``, ``x.stride(0)`` and ``x.stride(2)`` multiples of 8). Anything
    else, e.g. the ``(B, L, D)`` slice of a wider projection seen through ``transpose(1, 2)``,
    becomes a contiguous channel-first copy instead of a kernel error.
    """
    if x.stride(2) == 1:
        return x
    channel_last_ok = (
        x.stride(1) == 1 and x.shape[1] % 8 == 0 and x.stride(0) % 8 == 0 and x.stride(2) % 8 == 0
    )
    return x if channel_last_ok else x.contiguous()


def _width_issue(weight: Tensor) -> str | None:
    W = weight.shape[-1]
    if W in KERNEL_WIDTHS:
        return None
    return f"width {W}: the kernel supports widths {KERNEL_WIDTHS.start} to {KERNEL_WIDTHS.stop - 1} only"


def _bias_issue(weight: Tensor, bias: Tensor | None) -> str | None:
    if bias is None or bias.dtype == weight.dtype:
        return None
    return f"bias has dtype {bias.dtype}, the weight {weight.dtype} (they must match)"


def _activate(y: Tensor, activation: str | None) -> Tensor:
    return y if activation is None else F.silu(y)


def _check_activation(activation: str | None) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
