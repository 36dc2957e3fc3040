"""The selective scan's fast pure-PyTorch path: a custom autograd Function with a hand-derived backward.

Forward, with Δ final (bias and softplus applied by the caller):

    h_t = Ā_t ⊙ h_{t-1} + B̄u_t,   Ā_t = exp(Δ_t A),   B̄u_t = Δ_t u_t B_t,   y_t = C_t · h_t

Backward, with ``g_t = dL/dh_t`` from the adjoint recurrence ``g_t = C_t dy_t + Ā_{t+1} g_{t+1}``:

    dC_t = Σ_d dy_t h_t        dB_t = Σ_d g_t Δ_t u_t        d(Δu)_t = Σ_n g_t B_t
    d(ΔA)_t = g_t ⊙ Ā_t h_{t-1} = g_t ⊙ (h_t - B̄u_t)     (so the previous states need no storage)
    dΔ_t = Σ_n d(ΔA)_t A + d(Δu)_t u_t      dA = Σ_{b,t} d(ΔA)_t Δ_t      du_t = d(Δu)_t Δ_t

Autograd through the recurrence instead keeps a graph node per step and per operation, and its
backward materialises a full-size gradient for every one of them. Here the forward stores only
``Ā`` and the states (whole ``(L, B, D, N)`` tensors, from :func:`~lit_seqrl.ops.linear_scan.workspace`)
and the backward runs one adjoint scan plus a few contractions. Two schedules:

* several chunks (narrow steps, long L): whole-tensor operations and the chunked in-place scan of
  :mod:`lit_seqrl.ops.linear_scan`, ``2T + L/T`` Python steps per scan;
* a single chunk of wide steps (training batches): step by step, every per-step quantity
  computed and used while its slice is in cache, the adjoint state in one slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_seqrl.ops.linear_scan import scan_, workspace

#: A single chunk of wide steps (``stepwise``, the caller's choice: ``B·D·N`` above
#: ``CHUNKING_MAX_WIDTH``) runs step by step, each step's slices used while in cache: faster
#: forward+backward at training sizes than whole ``(L, B, D, N)`` tensors per operation, which
#: stay for chunks and narrow steps, where the stepwise form's Python overhead per step dominates
#: (benchmarks/README.md, "What was tried"). Setting it False forces the whole-tensor form.
STEPWISE_SINGLE_CHUNK = True


class SelectiveScanFn(torch.autograd.Function):
    """``y = C·h`` of the recurrence with a hand-derived backward (module docstring).

    Inputs (one dtype, fp32 or fp64): ``u, dt (B D L)`` with Δ final (after bias and softplus),
    ``A (D N)``, ``Bm, Cm (B G N L)``. Outputs ``y (B D L)`` and the last state ``(B D N)``.
    States are laid out ``(T c B G N R)``, channels innermost: every broadcast (Δ over the state
    index, B over the channels) then runs along long contiguous rows.
    """

    @staticmethod
    def forward(
        ctx, u: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, T: int, stepwise: bool
    ) -> tuple[Tensor, Tensor]:
        batch, d, L = u.shape
        g, n = Bm.shape[1], Bm.shape[2]
        lay = _TimeMajor(L, T, batch, g, d // g, stepwise)
        dt_t, dtu_t = lay.channels(dt), lay.channels(dt * u)  # (T c B G 1 R)
        B_t, C_t = lay.states(Bm), lay.states(Cm)  # (T c B G N 1)
        A_t = A.view(g, -1, n).transpose(1, 2).contiguous()  # (G N R)
        shape = (*dt_t.shape[:-2], n, d // g)  # (T c B G N R)
        dA, h = workspace(shape, u.dtype, u.device), workspace(shape, u.dtype, u.device)
        if lay.stepwise:
            y = _steps_forward(dt_t, dtu_t, B_t, C_t, A_t, dA, h)
        else:
            torch.mul(dt_t, A_t, out=dA).exp_()  # Ā, exponent <= 0
            scan_(dA, torch.mul(B_t, dtu_t, out=h))  # B̄u, overwritten with the states
            y = _flip(C_t) @ h  # (T c B G 1 R)
        ctx.save_for_backward(u, dt, A, Bm, Cm, dA, h)
        ctx.T, ctx.stepwise = T, stepwise
        last = h[-1, -1].transpose(-1, -2).reshape(batch, d, n)  # padding steps keep the last state
        return lay.unchannels(y), last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: Tensor, dlast: Tensor) -> tuple[Tensor | None, ...]:
        u, dt, A, Bm, Cm, dA, h = ctx.saved_tensors
        batch, d, L = u.shape
        g, n = Bm.shape[1], Bm.shape[2]
        lay = _TimeMajor(L, ctx.T, batch, g, d // g, ctx.stepwise)
        dt_t, u_t, dy_t = lay.channels(dt), lay.channels(u), lay.channels(dy)  # (T c B G 1 R)
        B_t, C_t = lay.states(Bm), lay.states(Cm)  # (T c B G N 1)
        dtu_t = dt_t * u_t

        A_t = A.view(g, -1, n).transpose(1, 2)  # (G N R)
        dlast = dlast.view(batch, g, -1, n).transpose(-1, -2)  # (B G N R)
        if lay.stepwise:
            du, ddt, dA_par, dB, dC = _steps_backward(dt_t, dtu_t, u_t, dy_t, B_t, C_t, A_t, dA, h, dlast)
            return (
                lay.unchannels(du),
                lay.unchannels(ddt),
                dA_par,
                lay.unstates(dB),
                lay.unstates(dC),
                None,
                None,
            )

        # Adjoint recurrence: dL/dh_t = C_t dy_t + Ā_{t+1} dL/dh_{t+1}, run backwards.
        gh = torch.mul(C_t, dy_t, out=workspace(h.shape, h.dtype, h.device))  # (T c B G N R)
        gh[-1, -1] += dlast
        scan_(dA, gh, adjoint=True)

        dC = h @ _flip(dy_t)  # (T c B G N 1)
        dB = gh @ _flip(dtu_t)  # (T c B G N 1)
        ddtu = _flip(B_t) @ gh  # dL/d(Δu) (T c B G 1 R)
        # Ā_t h_{t-1} = h_t - B̄u_t: the decay's gradient without storing the previous states.
        tmp = workspace(h.shape, h.dtype, h.device)
        gh.mul_(torch.addcmul(h, B_t, dtu_t, value=-1.0, out=tmp))  # dL/d(ΔA)_t, elementwise
        ddt = torch.addcmul(torch.mul(gh, A_t, out=tmp).sum(-2, keepdim=True), ddtu, u_t)  # (T c B G 1 R)
        del tmp
        gh.mul_(dt_t)  # summed over time and batch: dL/dA, a reduction over the leading dim
        dA_par = gh.view(-1, g, n, d // g).sum(0).transpose(1, 2).reshape(d, n)
        du = ddtu * dt_t
        return lay.unchannels(du), lay.unchannels(ddt), dA_par, lay.unstates(dB), lay.unstates(dC), None, None


def _steps_forward(dt: Tensor, dtu: Tensor, B: Tensor, C: Tensor, A: Tensor, dA: Tensor, h: Tensor) -> Tensor:
    """One chunk, step by step: each step's Ā, B̄u, state and readout while its slices are in cache.

    ``dt, dtu (T 1 B G 1 R)``, ``B, C (T 1 B G N 1)``, ``A (G N R)``; fills ``dA`` and ``h``
    ``(T 1 B G N R)`` and returns ``y (T 1 B G 1 R)``.
    """
    y = torch.empty_like(dt)
    dAs, hs, ys = dA.unbind(0), h.unbind(0), y.unbind(0)
    for i, (dt_i, dtu_i, B_i, C_i) in enumerate(zip(dt.unbind(0), dtu.unbind(0), B.unbind(0), C.unbind(0))):
        torch.mul(dt_i, A, out=dAs[i]).exp_()  # Ā, exponent <= 0
        torch.mul(B_i, dtu_i, out=hs[i])  # B̄u
        if i:
            hs[i].addcmul_(dAs[i], hs[i - 1])
        torch.matmul(_flip(C_i), hs[i], out=ys[i])
    return y


def _steps_backward(
    dt: Tensor,
    dtu: Tensor,
    u: Tensor,
    dy: Tensor,
    B: Tensor,
    C: Tensor,
    A: Tensor,
    dA: Tensor,
    h: Tensor,
    dlast: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The backward of :func:`_steps_forward`, step by step in reverse; the adjoint state lives in one slice.

    Returns ``du, ddt (T 1 B G 1 R)``, ``dA (D N)``, ``dB, dC (T 1 B G N 1)``.
    """
    T = dt.shape[0]
    g, n, r = A.shape
    dts, dtus, dys, Bs, Cs, dAs, hs = (x.unbind(0) for x in (dt, dtu, dy, B, C, dA, h))
    dB, dC, ddtu, ddt = torch.empty_like(B), torch.empty_like(C), torch.empty_like(dt), torch.empty_like(dt)
    gh, gh_next, prev, tmp = (torch.empty_like(h[0]) for _ in range(4))  # (1 B G N R)
    dA_acc = torch.zeros_like(h[0])
    for i in range(T - 1, -1, -1):
        # adjoint recurrence: dL/dh_t = C_t dy_t + Ā_{t+1} dL/dh_{t+1}
        torch.mul(Cs[i], dys[i], out=gh)
        if i == T - 1:
            gh.add_(dlast)
        else:
            gh.addcmul_(dAs[i + 1], gh_next)
        torch.matmul(hs[i], _flip(dys[i]), out=dC[i])
        torch.matmul(gh, _flip(dtus[i]), out=dB[i])
        torch.matmul(_flip(Bs[i]), gh, out=ddtu[i])  # dL/d(Δu)
        # Ā_t h_{t-1} = h_t - B̄u_t: the decay's gradient without the previous state
        torch.addcmul(hs[i], Bs[i], dtus[i], value=-1.0, out=prev).mul_(gh)  # dL/d(ΔA)_t
        torch.sum(torch.mul(prev, A, out=tmp), -2, keepdim=True, out=ddt[i])
        dA_acc.addcmul_(prev, dts[i])
        gh, gh_next = gh_next, gh
    ddt.addcmul_(ddtu, u)
    dA_par = dA_acc.view(-1, g, n, r).sum(0).transpose(1, 2).reshape(g * r, n)
    return ddtu.mul_(dt), ddt, dA_par, dB, dC


def _flip(x: Tensor) -> Tensor:
    """A contiguous row ``(..., 1, K)`` as a column ``(..., K, 1)`` or back, as a view: matmul
    took a slow path on the equivalent transposed strides (benchmarks/README.md)."""
    return x.view(*x.shape[:-2], x.shape[-1], x.shape[-2])


class _TimeMajor:
    """``(B, D, L)`` / ``(B, G, N, L)`` tensors to and from the ``(T, c, B, G, 1, R)`` / ``(T, c, B, G, N, 1)`` layouts."""

    def __init__(self, L: int, T: int, batch: int, g: int, r: int, stepwise: bool) -> None:
        self.L, self.T, self.c = L, T, -(-L // T)
        self.batch, self.g, self.r = batch, g, r
        self.stepwise = self.c == 1 and stepwise and STEPWISE_SINGLE_CHUNK

    def _pad(self, x: Tensor) -> Tensor:  # zeros after the end: Δ = 0 there, so Ā = 1 and B̄u = 0
        return F.pad(x, (0, self.c * self.T - self.L))

    def channels(self, x: Tensor) -> Tensor:  # (B D L) -> (T c B G 1 R)
        x = self._pad(x).view(self.batch, self.g, self.r, self.c, self.T)
        return x.permute(4, 3, 0, 1, 2).unsqueeze(-2).contiguous()

    def states(self, x: Tensor) -> Tensor:  # (B G N L) -> (T c B G N 1)
        x = self._pad(x).unflatten(-1, (self.c, self.T))
        return x.permute(4, 3, 0, 1, 2).unsqueeze(-1).contiguous()

    def unchannels(self, x: Tensor) -> Tensor:  # (T c B G [1] R) -> (B D L)
        x = x.reshape(self.T, self.c, self.batch, self.g, self.r).permute(2, 3, 4, 1, 0)
        return x.reshape(self.batch, self.g * self.r, self.c * self.T)[..., : self.L].contiguous()

    def unstates(self, x: Tensor) -> Tensor:  # (T c B G N [1]) -> (B G N L)
        x = x.reshape(self.T, self.c, self.batch, self.g, -1).permute(2, 3, 4, 1, 0).flatten(-2)
        return x[..., : self.L].contiguous()
