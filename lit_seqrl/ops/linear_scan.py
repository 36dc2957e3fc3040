"""In-place diagonal linear recurrence on time-major chunked tensors, and its adjoint.

The building block of the hand-derived selective scan (:mod:`lit_seqrl.ops.selective_scan`):
its forward runs ``h_t = a_t ⊙ h_{t-1} + x_t`` forwards in time, its backward runs the adjoint
``g_t = a_{t+1} ⊙ g_{t+1} + x_t`` backwards with the same decays. Nothing here is differentiated
by autograd.

Tensors have the layout ``(T, c, *rest)``: ``c`` chunks of ``T`` steps, time ``k·T + i`` at
index ``[i, k]``, so every step's slice ``x[i]`` is contiguous. One pass is:

1. the recurrence inside every chunk from a zero state, all chunks at once: ``T - 1`` fused
   ``addcmul_`` calls, each on ``c·|rest|`` elements;
2. if ``c > 1``: the states carried between chunks (``c - 1`` small steps), using the product of
   ``a`` over each chunk;
3. if ``c > 1``: one vectorised correction ``h_i += (Π a_j over the steps in between) ⊙ carry``.

With ``a`` in ``[0, 1]`` (Mamba: ``a = exp(ΔA)``, ``ΔA <= 0``) every product stays in ``[0, 1]``:
an underflow to zero is the exact limit, nothing overflows.
"""

from __future__ import annotations

import torch
from torch import Tensor


def scan_(a: Tensor, x: Tensor, adjoint: bool = False) -> Tensor:
    """Overwrite ``x`` with the recurrence's states and return it.

    Args:
        a: ``(T, c, *rest)`` decays, the shape of ``x``.
        x: ``(T, c, *rest)`` inputs, contiguous; overwritten with the states.
        adjoint: ``h_t = a_t h_{t-1} + x_t`` forwards in time from ``h_{-1} = 0`` (False), or
            ``h_t = a_{t+1} h_{t+1} + x_t`` backwards from ``h_{L} = 0`` (True), time running over
            chunks and steps together (``t = k·T + i``).

    Returns:
        ``x``, now the states ``(T, c, *rest)``.
    """
    T, c = x.shape[0], x.shape[1]
    if adjoint:
        for i in range(T - 2, -1, -1):  # 1. within chunks, from zero
            x[i].addcmul_(a[i + 1], x[i + 1])
    else:
        for i in range(1, T):
            x[i].addcmul_(a[i], x[i - 1])
    if c == 1:
        return x
    # 2. carries between chunks, zero into the first chunk (the last one for the adjoint)
    carry = torch.zeros_like(x[0])  # (c, *rest)
    if adjoint:
        # decay from step i to the chunk's end: Π_{j>i} a_j; the carry brings a_{next start} g_{next start}
        suffix = torch.cumprod(a.flip(0), 0).flip(0)  # Π_{j>=i} a_j
        through = torch.cat([suffix[1:], torch.ones_like(suffix[:1])])
        for k in range(c - 2, -1, -1):
            nxt = torch.addcmul(x[0, k + 1], through[0, k + 1], carry[k + 1])  # the next chunk's first state
            torch.mul(a[0, k + 1], nxt, out=carry[k])
    else:
        through = torch.cumprod(a, 0)  # Π_{j<=i} a_j: decay from the chunk's entry to step i
        for k in range(1, c):  # the previous chunk's final state
            torch.addcmul(x[T - 1, k - 1], through[T - 1, k - 1], carry[k - 1], out=carry[k])
    return x.addcmul_(through, carry)
