"""Cauchy kernel ``k_l = Σ_n v_n / (z_l - w_n)``, the inner loop of the S4 kernel (Gu et al. 2022).

* :func:`cauchy_naive` materialises the ``(..., N, L)`` matrix: the reference.
* :func:`cauchy_chunked` walks over ``L`` in chunks, forward and backward (a custom autograd
  function recomputes each chunk instead of saving it), so peak memory is ``(..., N, chunk)``
  instead of ``(..., N, L)``: at H=256, N=64, L=16384 that is 2 GiB per temporary for the naive
  version.
* :func:`cauchy` dispatches. No fused GPU kernel ships yet (none could be tested here), so
  ``backend="cuda"`` raises and ``"auto"`` always takes the chunked PyTorch path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_seqrl.ops.backend import BACKENDS, Backend, KernelUnavailableError

#: Elements of one (..., N, chunk) temporary in the chunked path (2^22 complex64 = 32 MiB).
DEFAULT_CHUNK_ELEMENTS = 1 << 22


def cauchy_naive(v: Tensor, z: Tensor, w: Tensor) -> Tensor:
    """Reference Cauchy kernel.

    Args:
        v: ``(..., N)`` numerators; w: ``(..., N)`` poles; z: ``(..., L)`` evaluation points.
            Leading dimensions broadcast; any of them may be real, the result is complex.

    Returns:
        ``(..., L)``: ``Σ_n v_n / (z_l - w_n)``.
    """
    v, z, w = _promote(v, z, w)
    return (v[..., :, None] / (z[..., None, :] - w[..., :, None])).sum(dim=-2)  # (... N L) -> (... L)


def cauchy_chunked(v: Tensor, z: Tensor, w: Tensor, chunk_size: int | None = None) -> Tensor:
    """Cauchy kernel with memory bounded by ``chunk_size`` evaluation points at a time.

    Same arguments and result as :func:`cauchy_naive`; ``chunk_size`` defaults to as many points as
    keep one ``(..., N, chunk)`` temporary under :data:`DEFAULT_CHUNK_ELEMENTS` elements.
    Differentiable once in ``v``, ``z`` and ``w``.
    """
    v, z, w = _promote(v, z, w)
    if chunk_size is None:  # the (b, N, chunk) reciprocal is the largest temporary
        rows = max(1, torch.broadcast_shapes(w.shape, (*z.shape[:-1], 1)).numel())
        chunk_size = max(1, DEFAULT_CHUNK_ELEMENTS // rows)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _CauchyChunked.apply(v, z, w, chunk_size)


def cauchy(
    v: Tensor, z: Tensor, w: Tensor, backend: Backend = "auto", chunk_size: int | None = None
) -> Tensor:
    """Cauchy kernel through the best available implementation (see module docstring).

    Shapes as in :func:`cauchy_naive`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuda":
        raise KernelUnavailableError('no fused Cauchy kernel is bundled yet; use backend="torch" or "auto"')
    return cauchy_chunked(v, z, w, chunk_size)


def _promote(v: Tensor, z: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    dtype = torch.promote_types(torch.promote_types(v.dtype, z.dtype), w.dtype)
    if not dtype.is_complex:
        dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    # Casting outside the autograd function lets autograd turn complex gradients back into real ones.
    return v.to(dtype), z.to(dtype), w.to(dtype)


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Undo broadcasting: sum ``grad`` down to ``shape``."""
    extra = grad.dim() - len(shape)
    if extra:
        grad = grad.sum(dim=tuple(range(extra)))
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class _CauchyChunked(torch.autograd.Function):
    """Chunked over L; backward recomputes ``r_{nl} = 1/(z_l - w_n)`` chunk by chunk.

    Numerators ``v`` may carry extra leading dims ``E`` over the batch ``S`` of ``z`` and ``w``
    (S4's Woodbury terms share their poles): ``r`` is then built once per chunk and contracted
    with all of them by one batched matmul instead of ``|E|`` broadcast-and-sum passes.

    PyTorch's complex convention: for holomorphic ``k(x)`` the incoming gradient ``g`` maps to
    ``g · conj(∂k/∂x)``, with ``∂k_l/∂v_n = r``, ``∂k_l/∂w_n = v_n r²``, ``∂k_l/∂z_l = -Σ_n v_n r²``.
    """

    @staticmethod
    def forward(ctx, v: Tensor, z: Tensor, w: Tensor, chunk_size: int) -> Tensor:  # type: ignore[override]
        full = torch.broadcast_shapes(v.shape[:-1], z.shape[:-1], w.shape[:-1])
        k = len(torch.broadcast_shapes(z.shape[:-1], w.shape[:-1]))
        S, E = full[len(full) - k :], full[: len(full) - k]
        N, L = max(v.shape[-1], w.shape[-1]), z.shape[-1]
        b, e = S.numel(), E.numel()
        v_ = v.expand(*full, N).reshape(e, b, N).transpose(0, 1)  # (b e N)
        z_ = z.expand(*S, L).reshape(b, L)  # (b L)
        w_ = w.expand(*S, N).reshape(b, N)  # (b N)
        ctx.save_for_backward(v, z, w)
        ctx.chunk_size, ctx.dims = chunk_size, (full, S, E, N, L, b, e)
        out = [v_ @ _recip(z_, w_, start, chunk_size) for start in range(0, L, chunk_size)]  # (b e C) each
        return torch.cat(out, dim=-1).transpose(0, 1).reshape(*E, *S, L)  # (*E *S L)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:  # type: ignore[override]
        v, z, w = ctx.saved_tensors
        full, S, E, N, L, b, e = ctx.dims
        need_v, need_z, need_w = ctx.needs_input_grad[:3]
        v_ = v.expand(*full, N).reshape(e, b, N).transpose(0, 1)  # (b e N)
        z_ = z.expand(*S, L).reshape(b, L)  # (b L)
        w_ = w.expand(*S, N).reshape(b, N)  # (b N)
        g_ = g.reshape(e, b, L).transpose(0, 1)  # (b e L)
        gv = v_.new_zeros(b, e, N) if need_v else None  # Σ_l g_l conj(r)
        gw = v_.new_zeros(b, e, N) if need_w else None  # Σ_l g_l conj(r²)
        gz = []
        for start in range(0, L, ctx.chunk_size):
            g_c = g_[..., start : start + ctx.chunk_size]  # (b e C)
            r = _recip(z_, w_, start, ctx.chunk_size).conj()  # (b N C)
            if gv is not None:
                gv = gv + g_c @ r.transpose(1, 2)
            r2 = r * r  # (b N C)
            if gw is not None:
                gw = gw + g_c @ r2.transpose(1, 2)
            if need_z:
                gz.append(-(g_c * (v_.conj() @ r2)).sum(dim=1))  # (b C)
        grad_v = _sum_to(gv.transpose(0, 1).reshape(*E, *S, N), v.shape) if gv is not None else None
        grad_w = _sum_to((gw * v_.conj()).sum(dim=1).reshape(*S, N), w.shape) if gw is not None else None
        grad_z = _sum_to(torch.cat(gz, dim=-1).reshape(*S, L), z.shape) if need_z else None
        return grad_v, grad_z, grad_w, None


def _recip(z: Tensor, w: Tensor, start: int, size: int) -> Tensor:
    """``1 / (z_l - w_n)`` for one chunk of evaluation points: ``z (b, L)``, ``w (b, N)`` -> ``(b, N, C)``."""
    return (z[:, None, start : start + size] - w[:, :, None]).reciprocal()
