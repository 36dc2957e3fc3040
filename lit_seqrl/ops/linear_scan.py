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
3. if ``c > 1``: one vectorised correction (plus ``T`` steps of running products) ``h_i += (Π a_j over the steps in between) ⊙ carry``.

With ``a`` in ``[0, 1]`` (Mamba: ``a = exp(ΔA)``, ``ΔA <= 0``) every product stays in ``[0, 1]``:
an underflow to zero is the exact limit, nothing overflows.
"""

from __future__ import annotations

import threading

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
    xs, as_ = x.unbind(0), a.unbind(0)  # views made once: indexing per step costs more than the step
    if adjoint:
        for i in range(T - 2, -1, -1):  # 1. within chunks, from zero
            xs[i].addcmul_(as_[i + 1], xs[i + 1])
    else:
        for i in range(1, T):
            xs[i].addcmul_(as_[i], xs[i - 1])
    if c == 1:
        return x
    # 2. decay from a chunk's start to each of its steps (the adjoint: from each step to the
    # chunk's end), a running product: torch.cumprod along a non-inner dim was slower here.
    through = workspace(x.shape, x.dtype, x.device)
    ts = through.unbind(0)
    if adjoint:  # Π_{j>i} a_j
        ts[T - 1].fill_(1.0)
        for i in range(T - 2, -1, -1):
            torch.mul(as_[i + 1], ts[i + 1], out=ts[i])
    else:  # Π_{j<=i} a_j
        ts[0].copy_(as_[0])
        for i in range(1, T):
            torch.mul(as_[i], ts[i - 1], out=ts[i])
    # 3. carries between chunks, zero into the first chunk (the last one for the adjoint)
    carry = torch.zeros_like(x[0])  # (c, *rest)
    if adjoint:  # the carry into chunk k is a_{next start} g_{next start}
        for k in range(c - 2, -1, -1):
            nxt = torch.addcmul(x[0, k + 1], through[0, k + 1], carry[k + 1])  # the next chunk's first state
            torch.mul(a[0, k + 1], nxt, out=carry[k])
    else:  # the previous chunk's final state
        for k in range(1, c):
            torch.addcmul(x[T - 1, k - 1], through[T - 1, k - 1], carry[k - 1], out=carry[k])
    return x.addcmul_(through, carry)


#: Buffers of at least this many bytes come from :func:`workspace`.
WORKSPACE_MIN_BYTES = 1 << 20
#: At most this many bytes are kept for reuse, over all shapes.
WORKSPACE_MAX_BYTES = 1 << 30

_buffers: list[Tensor] = []
_lock = threading.Lock()


def workspace(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised CPU tensor, reusing a kept buffer that nothing references any more.

    Why: glibc hands large freed blocks back to the operating system, so every fresh
    tensor of a few MB is paid again in page faults: on CPU, filling a new multi-MB tensor cost
    several times as much as overwriting an existing one (measured in benchmarks/README.md).
    A kept buffer is reused only when no tensor, view or autograd graph refers to it; CUDA
    (which has a caching allocator) and small tensors get a plain ``torch.empty``.
    """
    numel = 1
    for size in shape:
        numel *= size
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if torch.device(device).type != "cpu" or nbytes < WORKSPACE_MIN_BYTES or not _can_count_uses():
        return torch.empty(shape, dtype=dtype, device=device)
    with _lock:
        for buf in _buffers:
            if buf.dtype == dtype and buf.numel() == numel and _unused(buf):
                return buf.view(shape)
        buf = torch.empty(shape, dtype=dtype, device=device)
        if sum(b.nbytes for b in _buffers) + nbytes <= WORKSPACE_MAX_BYTES:
            _buffers.append(buf)
        # Always a view: the caller's tensor must hold its own reference to the storage, else
        # the buffer would look unused while the caller still writes to it.
        return buf.view(shape)


def clear_workspace() -> None:
    """Drop every kept buffer (memory is returned once no tensor uses it)."""
    with _lock:
        _buffers.clear()


def _unused(buf: Tensor) -> bool:
    # Only the list holds this tensor (use count 1) and only it holds its storage (count 2:
    # the list's tensor and the storage object made for the query).
    return buf._use_count() == 1 and torch._C._storage_Use_Count(buf.untyped_storage()._cdata) == 2


def _can_count_uses() -> bool:
    """Reference counts are private PyTorch API: without them, no reuse (never a wrong reuse)."""
    return hasattr(Tensor, "_use_count") and hasattr(torch._C, "_storage_Use_Count")
