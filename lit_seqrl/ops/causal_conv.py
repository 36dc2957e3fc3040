"""Depthwise causal 1-d convolution, the short convolution in front of Mamba's SSM.

    y[d, t] = act(bias[d] + Σ_k weight[d, k] · x[d, t - (W - 1) + k])        (x = 0 before t = 0)

* :func:`causal_conv1d_ref`: a sum of W shifted copies, the readable definition.
* :func:`causal_conv1d`: ``causal_conv1d.causal_conv1d_fn`` when usable (``backend`` rule of
  :mod:`lit_seqrl.ops.backend`), else PyTorch's grouped ``conv1d`` on a left-padded input.
* :func:`causal_conv1d_update`: one token on a rolling state holding the last W inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_seqrl.ops.backend import Backend, probe, use_kernel

KERNEL_MODULE = "causal_conv1d"
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
    if use_kernel(backend, KERNEL_MODULE, x, weight):
        return probe(KERNEL_MODULE).causal_conv1d_fn(x, weight, bias, activation=activation)
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
    if use_kernel(backend, KERNEL_MODULE, x_t, conv_state, weight):
        new_state = conv_state.clone()
        y = probe(KERNEL_MODULE).causal_conv1d_update(x_t, new_state, weight, bias, activation)
        return y, new_state
    new_state = torch.cat([conv_state[..., 1:], x_t[..., None].to(conv_state.dtype)], dim=-1)  # (B D W)
    y = (new_state * weight).sum(-1)  # (B D)
    if bias is not None:
        y = y + bias
    return _activate(y, activation).to(x_t.dtype), new_state


def _activate(y: Tensor, activation: str | None) -> Tensor:
    return y if activation is None else F.silu(y)


def _check_activation(activation: str | None) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
