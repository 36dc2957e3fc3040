"""Dropout with cheap masks on CPU.

``torch.nn.functional.dropout`` on CPU draws one Mersenne-Twister number per element through
``bernoulli_``: at the Decision Transformer's size that was a fifth of a training step on two
cores. Here each 64-bit draw of the same generator gives four 16-bit keep/drop decisions, so
masks cost about a quarter as much. The drop probability is rounded to a multiple of 2^-16
(0.1 -> 0.100006) and the scale uses that exact probability, so the output stays unbiased.
Other devices keep PyTorch's own (fused) dropout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LEVELS = 1 << 16  # decisions per draw are 16-bit: drop probability in steps of 2^-16


def check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")


def keep_mask(
    shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> Tensor:
    """Scaled keep mask: ``1 / (1 - p')`` with probability ``1 - p'``, else 0 (``p'`` = p rounded).

    Uses the default CPU generator, so ``torch.manual_seed`` makes it reproducible.
    """
    check_probability(p)
    n = math.prod(shape)
    dropped = round(p * _LEVELS)
    if dropped >= _LEVELS:
        return torch.zeros(shape, dtype=dtype, device=device)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    bits.random_(torch.iinfo(torch.int64).min, None)  # the full 64-bit range: every bit uniform
    # Signed 16-bit slices are uniform on [-2^15, 2^15): exactly `dropped` of the 2^16 values fall below.
    keep = bits.view(torch.int16)[:n].view(shape) >= dropped - _LEVELS // 2
    return keep.to(dtype).mul_(_LEVELS / (_LEVELS - dropped))


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Same contract as ``F.dropout(x, p, training)``; cheaper masks for CPU float tensors."""
    check_probability(p)
    if not training or p == 0.0:
        return x
    # Other devices, and compiled graphs (which draw their own masks; random_ would break the
    # graph), use PyTorch's dropout.
    if x.device.type != "cpu" or not x.is_floating_point() or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    return x * keep_mask(x.shape, p, x.dtype, "cpu")
