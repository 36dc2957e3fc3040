"""Mamba's selective SSM (Gu & Dao 2023), per channel ``d`` and state index ``n``:

    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t        y_t = C_t · h_t + D u_t        out_t = y_t · silu(z_t)

Arguments follow ``mamba_ssm.selective_scan_fn`` (channels before time):

* :func:`selective_scan_ref`: the recurrence one step at a time, the readable definition.
* :func:`selective_scan_chunked`: pure PyTorch, by default through the custom autograd Function
  of :mod:`lit_seqrl.ops.scan_function` (hand-derived backward); ``implementation="graph"`` is
  the chunked algorithm below differentiated by autograd, slower, kept as a second opinion.
* :func:`selective_scan`: the official CUDA kernel when usable (``backend`` rule of
  :mod:`lit_seqrl.ops.backend`), else the chunked path. "Usable" includes the compiled
  ``selective_scan_cuda`` extension (mamba-ssm builds it only with ``MAMBA_KEEP_CUDA_BUILD=TRUE``)
  and the kernel's argument rules, :func:`scan_kernel_issue`.
* :func:`selective_state_update`: one token of the recurrence, for O(1) inference (the Triton
  kernel when usable, :func:`state_update_kernel_issue`).

Chunked algorithm. The sequence is cut into ``c`` chunks of ``T`` steps, and every chunk is
processed at the same time:

1. inside each chunk, run the recurrence from a zero state (T steps, all chunks at once);
2. between chunks, a short recurrence on the chunk-end states: the decay across a whole chunk is
   ``exp(A Σ_t Δ_t)``, a sum in log space whose exponent is never positive;
3. run every chunk again from its true entering state and read out ``y``.

That is ``2T + L/T`` Python-level steps instead of ``L``, each on ``(B, c, D, N)`` tensors, and
every ``exp`` has a non-positive argument (A < 0, Δ >= 0), so nothing overflows whatever Δ is.
The chunked form does the recurrence's work twice, which pays off while per-step overhead
dominates (narrow ``B·D·N``, long L); for wide steps (training batches) the default is a single
chunk: the plain recurrence on contiguous time-major slices, run once.
Unlike Mamba-2's SSD (:mod:`lit_seqrl.ops.ssd`), the decay here differs per channel *and* state
index, so the ``T x T`` segment-sum matrix of a loop-free intra-chunk step would cost
``B·D·N·L·T`` (a T-fold increase over the scan itself); on CPU it was several times slower than
even the sequential reference, hence the short recurrence inside chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_seqrl.ops import scan_function
from lit_seqrl.ops.backend import KERNEL_DTYPES, Backend, dtype_issue, first_issue, probe, use_kernel

SCAN_MODULE = "mamba_ssm.ops.selective_scan_interface"
SCAN_EXTENSIONS = ("selective_scan_cuda",)  # imported lazily or not at all by the module: probe it
STATE_UPDATE_MODULE = "mamba_ssm.ops.triton.selective_state_update"
MAX_KERNEL_STATE = 256  # the scan kernel's largest state size N


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan, one time step at a time (the reference).

    Args:
        u: ``(B, D, L)`` input.
        delta: ``(B, D, L)`` step size Δ (before ``delta_bias`` and softplus).
        A: ``(D, N)`` real state matrix (diagonal per channel), normally negative.
        B, C: ``(B, N, L)``, or grouped ``(B, G, N, L)`` with channels split into G equal groups.
        D: ``(D,)`` skip connection.
        z: ``(B, D, L)`` gate: the output is multiplied by ``silu(z)``.
        delta_bias: ``(D,)`` added to Δ before the softplus.
        delta_softplus: apply ``softplus`` to Δ.
        return_last_state: also return the final state.

    Returns:
        ``out (B, D, L)`` in ``u``'s dtype, and with ``return_last_state`` the state ``(B, D, N)``.
        Like the kernel, everything is computed (and the state returned) in fp32, or fp64 for
        fp64 inputs.
    """
    dtype_in = u.dtype
    u, delta, A, B, C = _upcast(u, delta, A, B, C)
    delta = _step_size(delta, delta_bias, delta_softplus)  # (B D L)
    B, C = _per_channel(B, u.shape[1]), _per_channel(C, u.shape[1])  # (B D|1 N L)
    dA = torch.exp(torch.einsum("bdl,dn->lbdn", delta, A))  # (L B D N)  Ā = exp(ΔA)
    dBu = ((delta * u)[:, :, None, :] * B).permute(3, 0, 1, 2)  # (L B D N)  B̄u = ΔBu
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (B D N)
    ys = []
    for dA_t, dBu_t, C_t in zip(dA.unbind(0), dBu.unbind(0), C.permute(3, 0, 1, 2).unbind(0)):
        h = dA_t * h + dBu_t  # (B D N)
        ys.append((h * C_t).sum(-1))  # (B D)
    y = torch.stack(ys, dim=-1)  # (B D L)
    out = _epilogue(y, u, D, z).to(dtype_in)
    return (out, h) if return_last_state else out


def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk_size: int | None = None,
    implementation: Literal["function", "graph"] = "function",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan by chunks (module docstring); arguments and result as :func:`selective_scan_ref`.

    ``chunk_size`` (T) defaults to about ``sqrt(L)``, at most :data:`MAX_DEFAULT_CHUNK`, when a
    time step is small (``B·D·N`` up to :data:`CHUNKING_MAX_WIDTH`), else to ``L``: one chunk, the
    recurrence on time-major slices, which beats the chunked form's second pass once each step is
    a lot of work anyway.
    Differentiable by autograd in every input.
    """
    dtype_in = u.dtype
    u, delta, A, B, C = _upcast(u, delta, A, B, C)
    delta = _step_size(delta, delta_bias, delta_softplus)  # (B D L)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    width = u.shape[0] * u.shape[1] * A.shape[1]
    T = min(chunk_size or _default_chunk_size(u.shape[-1], width), u.shape[-1])
    stepwise = u.shape[-1] <= T and width > CHUNKING_MAX_WIDTH
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C))
    if implementation == "function" and (needs_grad or not stepwise):
        B, C = _grouped(B, u.shape[1]), _grouped(C, u.shape[1])  # (B G N L)
        y, last_state = scan_function.SelectiveScanFn.apply(u, delta, A, B, C, T, stepwise)
    elif implementation in ("function", "graph"):
        # Forward only on wide steps (acting): the plain recurrence stores nothing for a
        # backward, and was faster than the Function's forward (benchmarks/README.md).
        B, C = _per_channel(B, u.shape[1]), _per_channel(C, u.shape[1])  # (B D|1 N L)
        y, last_state = _chunked_scan(u, delta, A, B, C, chunk_size)
    else:
        raise ValueError(f"implementation must be 'function' or 'graph', got {implementation!r}")
    out = _epilogue(y, u, D, z).to(dtype_in)
    return (out, last_state) if return_last_state else out


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: Backend = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan through the official kernel when usable, else :func:`selective_scan_chunked`.

    Shapes as in :func:`selective_scan_ref`.
    """
    if use_kernel(
        backend,
        SCAN_MODULE,
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        extensions=SCAN_EXTENSIONS,
        issue=lambda: scan_kernel_issue(u, delta, A, B, C, z),
    ):
        fn = probe(SCAN_MODULE).selective_scan_fn
        D = None if D is None else D.float()  # the kernel takes D and delta_bias in fp32 only
        delta_bias = None if delta_bias is None else delta_bias.float()
        return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def selective_state_update(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor]:
    """One step of the selective SSM: the scan's recurrence for a single token.

    Args:
        state: ``(B, D, N)`` state before the token.
        x, dt: ``(B, D)`` input and step size (before ``dt_bias`` / softplus).
        A: ``(D, N)``; B, C: ``(B, N)`` or grouped ``(B, G, N)``; D, dt_bias: ``(D,)``; z: ``(B, D)``.
            Grouped B and C run on the PyTorch path only: in this head-less form the Triton
            kernel sees one head, so it accepts G = 1 only.

    Returns:
        ``(y (B, D), new_state (B, D, N))``. Unlike the official function, ``state`` is not
        modified in place (a finished environment's row can then be reset functionally).
    """
    if use_kernel(
        backend,
        STATE_UPDATE_MODULE,
        state,
        x,
        dt,
        A,
        B,
        C,
        D,
        z,
        issue=lambda: state_update_kernel_issue(state, x, B, C),
    ):
        new_state = state.clone()
        y = probe(STATE_UPDATE_MODULE).selective_state_update(
            new_state, x, dt, A, B, C, D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus
        )
        return y, new_state
    dtype_in = x.dtype
    x, dt, A, B, C, h = _upcast(x, dt, A, B, C, state)
    dt = _step_size(dt, dt_bias, dt_softplus)  # (B D)
    B = _per_channel(B, x.shape[1], time_axis=False)  # (B D|1 N)
    C = _per_channel(C, x.shape[1], time_axis=False)  # (B D|1 N)
    h = torch.exp(dt[..., None] * A) * h + (dt * x)[..., None] * B  # (B D N)
    y = (h * C).sum(-1)  # (B D)
    return _epilogue(y, x, D, z).to(dtype_in), h.to(state.dtype)


def _chunked_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int | None
) -> tuple[Tensor, Tensor]:
    """``y = C·h`` without D or gate: ``(B D L)`` and the last state ``(B D N)``; B, C ``(B D|1 N L)``."""
    batch, d, L = u.shape
    n = A.shape[1]
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    T = min(chunk_size or _default_chunk_size(L, batch * d * n), L)  # longer chunks would only add padding
    pad = -L % T
    if pad:  # Δ = 0 on padding: Ā = 1 and B̄u = 0 carry the state through unchanged
        u, delta, B, C = (F.pad(t, (0, pad)) for t in (u, delta, B, C))
    c = (L + pad) // T

    def chunked(t: Tensor) -> Tensor:  # (B K c*T) -> (T B c K), time-major so that t[i] is contiguous
        return t.unflatten(-1, (c, T)).permute(3, 0, 2, 1).contiguous()

    g = B.shape[1]  # 1 (shared by all channels) or D
    dt, dtu = chunked(delta), chunked(delta * u)  # (T B c D)
    B = chunked(B.flatten(1, 2)).unflatten(-1, (g, n))  # (T B c D|1 N)
    C = chunked(C.flatten(1, 2)).unflatten(-1, (g, n))  # (T B c D|1 N)

    # Loops walk over unbind()'s slices: indexing t[i] would cost a full-size zero tensor per
    # step in the backward pass (select's gradient), unbind's gradient is one stack.
    def discretized() -> Iterator[tuple[Tensor, Tensor]]:  # Ā = exp(ΔA) (exponent <= 0), B̄u = ΔuB
        for dt_i, dtu_i, B_i in zip(dt.unbind(0), dtu.unbind(0), B.unbind(0)):
            yield torch.exp(dt_i[..., None] * A), dtu_i[..., None] * B_i  # 2 x (B c D N)

    h = u.new_zeros(batch, c, d, n)  # (B c D N)
    steps: Iterable[tuple[Tensor, Tensor]] = discretized()
    if c > 1:
        # 1. every chunk from a zero state
        steps = list(steps)  # kept for the second pass
        for dA_i, dBu_i in steps:
            h = torch.addcmul(dBu_i, dA_i, h)  # Ā h + B̄u
        # 2. states entering each chunk; decay over a whole chunk from the log-space sum of ΔA
        chunk_decay = torch.exp(dt.sum(0)[..., None] * A)  # (B c D N)
        state = u.new_zeros(batch, d, n)  # (B D N)
        entering = []
        for decay_k, h_k in zip(chunk_decay.unbind(1), h.unbind(1)):
            entering.append(state)
            state = torch.addcmul(h_k, decay_k, state)
        h = torch.stack(entering, dim=1)  # (B c D N)

    # 3. every chunk (again) from its true entering state, reading out y
    ys = []
    for (dA_i, dBu_i), C_i in zip(steps, C.unbind(0)):
        h = torch.addcmul(dBu_i, dA_i, h)  # (B c D N)
        ys.append((h * C_i).sum(-1))  # (B c D)
    y = torch.stack(ys, dim=0).permute(1, 3, 2, 0).reshape(batch, d, c * T)  # (B D c*T)
    return y[..., :L], h[:, -1]


#: Above this many elements per time step (``B·D·N``), one step alone is enough work per Python
#: step, and the chunked form's extra pass costs more than the steps it saves (measured on CPU).
CHUNKING_MAX_WIDTH = 1 << 13


#: Longest default chunk for narrow inputs. Past a few hundred steps the whole-tensor passes
#: over ``(L, D, N)``, not the Python steps, cost the most, and shorter chunks keep each step's
#: slice of them smaller: forward+backward at batch 1, d_inner 128, N 16 was flat for T = 20-32
#: and 1.2x slower at T = 64 (L = 1024 and 4096; benchmarks/README.md).
MAX_DEFAULT_CHUNK = 24


def _default_chunk_size(L: int, width: int) -> int:
    """Chunk length for ``L`` steps of ``width = B·D·N`` elements.

    Narrow inputs: about ``sqrt(L)`` chunks of ``sqrt(L)`` steps, the fewest Python steps
    ``2T + L/T``, capped at :data:`MAX_DEFAULT_CHUNK`. Wide inputs: one chunk, i.e. the plain
    recurrence, run once.
    """
    return min(math.ceil(L / math.isqrt(L)), MAX_DEFAULT_CHUNK) if width <= CHUNKING_MAX_WIDTH else L


def _step_size(delta: Tensor, bias: Tensor | None, softplus: bool) -> Tensor:
    """Δ with its bias and softplus; ``bias (D,)`` broadcasts over the batch and any trailing time axis."""
    if bias is not None:
        delta = delta + bias.to(delta.dtype).view(-1, *([1] * (delta.dim() - 2)))
    return F.softplus(delta) if softplus else delta


def _per_channel(X: Tensor, d: int, time_axis: bool = True) -> Tensor:
    """B or C per channel: shared ``(B, N[, L])`` -> ``(B, 1, N[, L])``; grouped ``(B, G, N[, L])`` -> ``(B, D, N[, L])``."""
    if X.dim() == 2 + time_axis:
        return X.unsqueeze(1)
    if X.dim() != 3 + time_axis:
        raise ValueError(
            f"B and C must be (B, N{', L' * time_axis}) or (B, G, N{', L' * time_axis}), got {tuple(X.shape)}"
        )
    g = X.shape[1]
    if d % g:
        raise ValueError(f"{g} groups do not divide {d} channels")
    return X.repeat_interleave(d // g, dim=1)


def _grouped(X: Tensor, d: int) -> Tensor:
    """B or C as ``(B, G, N, L)``: a shared ``(B, N, L)`` is one group of all ``d`` channels."""
    if X.dim() == 3:
        return X.unsqueeze(1)
    if X.dim() != 4:
        raise ValueError(f"B and C must be (B, N, L) or (B, G, N, L), got {tuple(X.shape)}")
    if d % X.shape[1]:
        raise ValueError(f"{X.shape[1]} groups do not divide {d} channels")
    return X


def _upcast(*tensors: Tensor) -> list[Tensor]:
    """Compute in fp32 at least (half-precision inputs are upcast, like the kernel; fp64 stays fp64)."""
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return [t.to(dtype) for t in tensors]


def _epilogue(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """``y + D u``, gated by ``silu(z)``; channels at dim 1 (any trailing time axis broadcasts)."""
    if D is not None:
        y = y + u * D.to(y.dtype).view(-1, *([1] * (u.dim() - 2)))
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


# --- eligibility for the official kernels (used by the dispatchers above) ---


def scan_kernel_issue(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, z: Tensor | None
) -> str | None:
    """Why ``selective_scan_fn`` would reject these arguments (None if it would not).

    Its checks: u in fp32/fp16/bf16, Δ, B, C and z in u's dtype, A real fp32, N <= 256, and G
    dividing the channels (D and delta_bias are cast to fp32 by :func:`selective_scan`).
    """
    same = [
        None
        if t is None or t.dtype == u.dtype
        else f"{name} has dtype {t.dtype}, u {u.dtype} (they must match)"
        for name, t in (("delta", delta), ("B", B), ("C", C), ("z", z))
    ]
    groups = B.shape[1] if B.dim() == 4 else 1
    return first_issue(
        dtype_issue("u", u),
        *same,
        dtype_issue("A", A, (torch.float32,)),
        None if A.shape[-1] <= MAX_KERNEL_STATE else f"state size {A.shape[-1]} > {MAX_KERNEL_STATE}",
        None if u.shape[1] % groups == 0 else f"{groups} groups do not divide {u.shape[1]} channels",
    )


def state_update_kernel_issue(state: Tensor, x: Tensor, B: Tensor, C: Tensor) -> str | None:
    """Why the Triton ``selective_state_update`` would reject the head-less call (None if it would not)."""
    grouped = next((t for t in (B, C) if t.dim() == 3 and t.shape[1] != 1), None)
    return first_issue(
        None
        if grouped is None
        else f"grouped B/C (G = {grouped.shape[1]}): the head-less kernel takes G = 1 only",
        dtype_issue("x", x, KERNEL_DTYPES),
        dtype_issue("state", state, KERNEL_DTYPES),
    )
