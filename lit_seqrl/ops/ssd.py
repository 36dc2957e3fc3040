"""Mamba-2's state space duality (SSD, Dao & Gu 2024): a selective SSM whose decay is one scalar per head.

Per head ``h`` (state ``S (P, N)``, heads share B and C within each of G groups):

    S_t = exp(Δ_t A_h) S_{t-1} + Δ_t x_t B_tᵀ        y_t = S_t C_t + D_h x_t        out_t = y_t · silu(z_t)

* :func:`ssd_ref`: the recurrence one step at a time, the readable definition.
* :func:`ssd_chunked`: the chunked SSD algorithm in pure PyTorch. Because the decay is a scalar
  per head, the ``T x T`` matrix of decays between steps of a chunk is cheap, so inside a chunk
  the SSM is a masked "attention" ``(C_t · B_s) exp(Σ_{s<k<=t} Δ_k A)``; between chunks a short
  recurrence carries the ``(P, N)`` states. The segment sums ``Σ_{s<k<=t} Δ_k A`` are built from
  the terms themselves (not as differences of long cumulative sums), so they are exact and
  never positive: no ``exp`` can overflow.
* :func:`ssd`: ``mamba_ssm``'s fused Triton kernel ``mamba_chunk_scan_combined`` when usable
  (``backend`` rule of :mod:`lit_seqrl.ops.backend`), else :func:`ssd_chunked`.
* :func:`ssd_state_update`: one token of the recurrence, for O(1) inference; ``mamba_ssm``'s
  Triton ``selective_state_update`` (in its per-head form, as the official Mamba-2 steps) when
  usable, else PyTorch.

Both kernels are used only for fp32/fp16/bf16 inputs (:func:`ssd_kernel_issue`); their
wrappers make B, C and x contiguous themselves where the Triton code needs it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_seqrl.ops.backend import Backend, dtype_issue, first_issue, probe, use_kernel

KERNEL_MODULE = "mamba_ssm.ops.triton.ssd_combined"
STATE_UPDATE_MODULE = "mamba_ssm.ops.triton.selective_state_update"


def ssd_ref(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """SSD, one time step at a time (the reference).

    Args:
        x: ``(B, L, H, P)`` input, H heads of P channels.
        dt: ``(B, L, H)`` step size Δ (before ``dt_bias`` and softplus).
        A: ``(H,)`` decay rate per head, normally negative.
        B, C: ``(B, L, G, N)``; G groups of ``H/G`` heads share them.
        D: ``(H,)`` or ``(H, P)`` skip connection.
        z: ``(B, L, H, P)`` gate: the output is multiplied by ``silu(z)``.
        dt_bias: ``(H,)`` added to Δ before the softplus.
        initial_states: ``(B, H, P, N)``, zeros if None.
        return_final_states: also return the state after the last step.

    Returns:
        ``out (B, L, H, P)`` in ``x``'s dtype (computed in fp32 at least), and with
        ``return_final_states`` the state ``(B, H, P, N)`` in the compute dtype.
    """
    dtype_in = x.dtype
    x, dt, A, B, C = _upcast(x, dt, A, B, C)
    dt = _step_size(dt, dt_bias, dt_softplus)  # (B L H)
    B, C = _per_head(B, x.shape[2]), _per_head(C, x.shape[2])  # (B L H N)
    batch, L, H, P = x.shape
    S = (
        x.new_zeros(batch, H, P, B.shape[-1]) if initial_states is None else initial_states.to(x.dtype)
    )  # (B H P N)
    ys = []
    for t in range(L):
        dA = torch.exp(dt[:, t] * A)[..., None, None]  # (B H 1 1)
        S = dA * S + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]  # (B H P N)
        ys.append((S * C[:, t, :, None, :]).sum(-1))  # (B H P)
    y = torch.stack(ys, dim=1)  # (B L H P)
    out = _epilogue(y, x, D, z).to(dtype_in)
    return (out, S) if return_final_states else out


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD (module docstring); arguments and result as :func:`ssd_ref`.

    Any ``L`` works (the last chunk is padded). Differentiable by autograd in every input.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype_in = x.dtype
    x, dt, A, B, C = _upcast(x, dt, A, B, C)
    dt = _step_size(dt, dt_bias, dt_softplus)  # (B L H)
    B, C = _per_head(B, x.shape[2]), _per_head(C, x.shape[2])  # (B L H N)
    batch, L, H, P = x.shape
    T = min(chunk_size, L)  # a chunk longer than the sequence would only add padding
    pad = -L % T
    xs = x
    if pad:  # Δ = 0 on padding: decay 1 and no input, the state passes through unchanged
        xs, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    c = (L + pad) // T

    X = (xs * dt[..., None]).unflatten(1, (c, T))  # (B c T H P)  Δ x: the discretised input
    B, C = B.unflatten(1, (c, T)), C.unflatten(1, (c, T))  # (B c T H N)
    a = (dt * A).unflatten(1, (c, T)).permute(0, 3, 1, 2)  # (B H c T)  log decay per step, <= 0
    a_cum = a.cumsum(-1)  # (B H c T)

    # 1. within chunks: y_t = Σ_{s<=t} (C_t · B_s) exp(Σ_{s<k<=t} a_k) X_s
    decay = torch.exp(segsum(a))  # (B H c T T), zero above the diagonal
    scores = torch.einsum("bcthn,bcshn->bhcts", C, B) * decay  # (B H c T T)
    y = torch.einsum("bhcts,bcshp->bcthp", scores, X)  # (B c T H P)

    # 2. state at each chunk's end from that chunk's inputs alone
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (B H c T), <= 1
    chunk_states = torch.einsum("bcshn,bhcs,bcshp->bchpn", B, to_end, X)  # (B c H P N)

    # 3. a short recurrence between chunks for the states entering each chunk
    chunk_decay = torch.exp(a_cum[..., -1])[..., None, None]  # (B H c 1 1)
    S = (
        x.new_zeros(batch, H, P, B.shape[-1]) if initial_states is None else initial_states.to(x.dtype)
    )  # (B H P N)
    entering = []
    for k in range(c):
        entering.append(S)
        S = chunk_decay[:, :, k] * S + chunk_states[:, k]
    entering = torch.stack(entering, dim=1)  # (B c H P N)

    # 4. the entering state's contribution, decayed to each step: exp(a_cum_t) C_t · S_in
    from_start = torch.exp(a_cum).permute(0, 2, 3, 1)[..., None]  # (B c T H 1)
    y = y + torch.einsum("bcthn,bchpn->bcthp", C, entering) * from_start  # (B c T H P)

    y = y.flatten(1, 2)[:, :L]  # (B L H P)
    out = _epilogue(y, x, D, z).to(dtype_in)
    return (out, S) if return_final_states else out


def ssd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
    backend: Backend = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """SSD through the official fused kernel when usable, else :func:`ssd_chunked`; shapes as :func:`ssd_ref`."""
    if use_kernel(
        backend, KERNEL_MODULE, x, dt, A, B, C, D, z, initial_states, issue=lambda: ssd_kernel_issue(x, B)
    ):
        return probe(KERNEL_MODULE).mamba_chunk_scan_combined(
            x,
            dt,
            A,
            B,
            C,
            chunk_size,
            D=D,
            z=z,
            dt_bias=dt_bias,
            initial_states=initial_states,
            dt_softplus=dt_softplus,
            return_final_states=return_final_states,
        )
    return ssd_chunked(
        x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, initial_states, return_final_states
    )


def ssd_state_update(
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
    """One step of SSD.

    Args:
        state: ``(B, H, P, N)``; x: ``(B, H, P)``; dt: ``(B, H)``; A: ``(H,)``;
        B, C: ``(B, G, N)``; D: ``(H,)`` or ``(H, P)``; z: ``(B, H, P)``; dt_bias: ``(H,)``.
        backend: as :func:`ssd`; the kernel is ``selective_state_update``.

    Returns:
        ``(y (B, H, P), new_state (B, H, P, N))``; ``state`` is not modified.
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
        issue=lambda: first_issue(ssd_kernel_issue(x, B), dtype_issue("state", state)),
    ):
        return _ssd_state_update_kernel(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    dtype_in = x.dtype
    x, dt, A, B, C, S = _upcast(x, dt, A, B, C, state)
    dt = _step_size(dt, dt_bias, dt_softplus)  # (B H)
    B, C = _per_head(B, x.shape[1]), _per_head(C, x.shape[1])  # (B H N)
    S = (
        torch.exp(dt * A)[..., None, None] * S + (dt[..., None] * x)[..., None] * B[:, :, None, :]
    )  # (B H P N)
    y = (S * C[:, :, None, :]).sum(-1)  # (B H P)
    return _epilogue(y, x, D, z).to(dtype_in), S.to(state.dtype)


def segsum(a: Tensor) -> Tensor:
    """Segment sums ``out[..., t, s] = Σ_{s<k<=t} a_k`` for ``s <= t`` and ``-inf`` above the diagonal.

    ``a (..., T) -> (..., T, T)``. Each entry sums only its own terms (a masked cumulative sum),
    so it stays exact where ``a_cum[t] - a_cum[s]`` would cancel two large numbers.
    """
    T = a.shape[-1]
    strictly_lower = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)  # (T T)
    terms = (
        a[..., :, None].expand(*a.shape, T).masked_fill(~strictly_lower, 0.0)
    )  # (... T T): [t, s] = a_t if t > s
    out = terms.cumsum(dim=-2)  # (... T T)
    lower = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()  # (T T)
    return out.masked_fill(~lower, float("-inf"))


def _upcast(*tensors: Tensor) -> list[Tensor]:
    """Compute in fp32 at least (half-precision inputs are upcast, like the kernel; fp64 stays fp64)."""
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return [t.to(dtype) for t in tensors]


def _step_size(dt: Tensor, bias: Tensor | None, softplus: bool) -> Tensor:
    if bias is not None:
        dt = dt + bias.to(dt.dtype)
    return F.softplus(dt) if softplus else dt


def _per_head(X: Tensor, n_heads: int) -> Tensor:
    """``(..., G, N)`` -> ``(..., H, N)``: every head gets its group's B or C."""
    g = X.shape[-2]
    if n_heads % g:
        raise ValueError(f"{g} groups do not divide {n_heads} heads")
    return X.repeat_interleave(n_heads // g, dim=-2)


def _epilogue(y: Tensor, x: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """``y + D x`` gated by ``silu(z)``; heads and head channels are the last two dims."""
    if D is not None:
        D = D.to(y.dtype)
        y = y + x * (D[:, None] if D.dim() == 1 else D)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


# --- eligibility for the official kernels (used by the dispatchers above) ---


def ssd_kernel_issue(x: Tensor, B: Tensor) -> str | None:
    """Why the Triton SSD kernels should not take these arguments (None if they can).

    Only dtypes are checked here: the ``(G, N)`` groups must divide the heads on every path.
    """
    return first_issue(dtype_issue("x", x), dtype_issue("B", B))


def _ssd_state_update_kernel(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    dt_softplus: bool,
) -> tuple[Tensor, Tensor]:
    """:func:`ssd_state_update` through ``selective_state_update``'s per-head form.

    That kernel wants per-channel ``dt (B, H, P)``, ``A (H, P, N)``, ``dt_bias``/``D (H, P)``;
    as the official Mamba-2 step, they are broadcast views (stride 0) of the per-head values,
    which the kernel detects and reads once per head.
    """
    P, N = x.shape[-1], state.shape[-1]
    new_state = state.clone()  # the kernel updates in place; ours must not touch the caller's state
    y = probe(STATE_UPDATE_MODULE).selective_state_update(
        new_state,
        x,
        dt[..., None].expand(*dt.shape, P),  # (B H P)
        A[:, None, None].expand(A.shape[0], P, N),  # (H P N)
        B,
        C,
        None if D is None else (D[:, None].expand(D.shape[0], P) if D.dim() == 1 else D),  # (H P)
        z=z,
        dt_bias=None if dt_bias is None else dt_bias[:, None].expand(dt_bias.shape[0], P),  # (H P)
        dt_softplus=dt_softplus,
    )
    return y, new_state
