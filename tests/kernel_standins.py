"""Stand-in ``mamba_ssm`` and ``causal_conv1d`` packages for driving the kernel paths on CPU.

:func:`write_standins` writes, into a directory meant for ``sys.path``, packages with the module
layout, call signatures and *argument checks* of the official kernels (the checks of their
C++/Triton wrappers: dtypes, widths 2-4, channel-last ``dim % 8`` and stride rules, shapes,
G = 1 in the head-less state update, which compiled extension exists), each raising as the real
kernel would. They compute with this project's reference functions (or a few lines of their
own for the state updates), so a call that passes the checks returns the right numbers.
Every call is counted in ``standin_calls.CALLS`` so that a test can tell the kernel ran.

Nothing here is used by the package itself.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

#: Top-level module names the stand-ins occupy (to purge from ``sys.modules`` around a test).
STANDIN_ROOTS = ("mamba_ssm", "causal_conv1d", "causal_conv1d_cuda", "selective_scan_cuda", "standin_calls")

_CALLS = """
import collections

CALLS = collections.Counter()
"""

_COMMON = """
import torch

FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def check(cond, msg="check failed"):
    # The stand-in of TORCH_CHECK / assert in the official wrappers.
    if not cond:
        raise RuntimeError(msg)
"""

# --- causal-conv1d: the compiled extension and the Python interface ---------------------------
_CONV_CUDA = (
    _COMMON
    + """
import torch.nn.functional as F

from lit_seqrl.ops.causal_conv import causal_conv1d_ref
from standin_calls import CALLS


def causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, final_states_out, silu_activation):
    check(x.dtype in FLOATS and weight.dtype in FLOATS, "causal_conv1d_fwd: unsupported dtype")
    check(x.dim() == 3, "x must be (batch, dim, seqlen)")
    batch, dim, seqlen = x.shape
    width = weight.shape[-1]
    check(tuple(weight.shape) == (dim, width), "weight must have shape (dim, width)")
    check(x.stride(2) == 1 or x.stride(1) == 1, "x must be channel-first or channel-last")
    channel_last = x.stride(1) == 1 and x.stride(2) > 1
    if channel_last:
        check(dim % 8 == 0, "causal_conv1d only supports channel dimension divisible by 8 for now")
        check(
            x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0,
            "causal_conv1d with channel last layout requires strides (x.stride(0) and x.stride(2)) to be multiples of 8",
        )
    check(2 <= width <= 4, "causal_conv1d only supports width between 2 and 4")
    if bias is not None:
        check(bias.dtype == weight.dtype, "bias must have the weight's dtype")
        check(bias.stride(-1) == 1 and tuple(bias.shape) == (dim,), "bias must be (dim,), contiguous")
    CALLS["causal_conv1d_fwd"] += 1
    y = causal_conv1d_ref(x.to(weight.dtype), weight, bias, "silu" if silu_activation else None)
    return y.to(x.dtype)


def causal_conv1d_update(x, conv_state, weight, bias, silu_activation, *unused):
    check(x.dtype in FLOATS and weight.dtype in FLOATS, "causal_conv1d_update: unsupported dtype")
    check(conv_state.dtype == x.dtype, "conv_state must have the input's dtype")
    batch, dim = x.shape[:2]
    width = weight.shape[-1]
    check(tuple(weight.shape) == (dim, width), "weight must have shape (dim, width)")
    check(conv_state.shape[:2] == (batch, dim) and conv_state.shape[2] >= width - 1, "conv_state shape")
    check(2 <= width <= 4, "causal_conv1d only supports width between 2 and 4")
    if bias is not None:
        check(bias.dtype == weight.dtype, "bias must have the weight's dtype")
        check(bias.stride(-1) == 1 and tuple(bias.shape) == (dim,), "bias must be (dim,), contiguous")
    CALLS["causal_conv1d_update"] += 1
    seqlen = x.shape[-1]
    joined = torch.cat([conv_state, x], dim=-1)  # (batch dim state_len+seqlen)
    conv_state.copy_(joined[..., -conv_state.shape[-1]:])  # in place, as the kernel
    y = causal_conv1d_ref(joined.to(weight.dtype), weight, bias, "silu" if silu_activation else None)
    return y[..., -seqlen:].to(x.dtype)
"""
)

_CONV_PKG = """
import causal_conv1d_cuda


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None):
    if activation not in (None, "silu", "swish"):
        raise NotImplementedError("activation must be None, silu, or swish")
    if x.stride(2) != 1 and x.stride(1) != 1:  # the interface's own fix-up; nothing more
        x = x.contiguous()
    bias = bias.contiguous() if bias is not None else None
    return causal_conv1d_cuda.causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, final_states_out,
                                                activation in ("silu", "swish"))


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None,
                         conv_state_indices=None):
    if activation not in (None, "silu", "swish"):
        raise NotImplementedError("activation must be None, silu, or swish")
    unsqueeze = x.dim() == 2
    if unsqueeze:
        x = x.unsqueeze(-1)
    out = causal_conv1d_cuda.causal_conv1d_update(x, conv_state, weight, bias, activation in ("silu", "swish"))
    return out.squeeze(-1) if unsqueeze else out
"""

# --- mamba-ssm: the selective-scan extension and its interface ---------------------------------
_SCAN_CUDA = (
    _COMMON
    + """
from lit_seqrl.ops.selective_scan import selective_scan_ref
from standin_calls import CALLS


def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, *unused):
    check(u.dtype in FLOATS, "selective_scan: u dtype")
    check(A.dtype in (torch.float32, torch.complex64), "selective_scan: A must be fp32 or complex64")
    variable_B, variable_C = B.dim() >= 3, C.dim() >= 3
    check(delta.dtype == u.dtype, "delta must have u's dtype")
    check(B.dtype == (u.dtype if variable_B else A.dtype), "B dtype")
    check(C.dtype == (u.dtype if variable_C else A.dtype), "C dtype")
    check(u.stride(-1) == 1 or u.shape[-1] == 1, "u must be contiguous in time")
    check(delta.stride(-1) == 1 or delta.shape[-1] == 1, "delta must be contiguous in time")
    batch, dim, seqlen = u.shape
    dstate = A.shape[1]
    check(dstate <= 256, "selective_scan only supports state dimension <= 256")
    check(tuple(delta.shape) == (batch, dim, seqlen) and tuple(A.shape) == (dim, dstate), "shapes")
    for X in (B, C):
        check(X.dim() == 4 and tuple(X.shape) == (batch, B.shape[1], dstate, seqlen), "B/C must be (b, g, n, l)")
        check(X.stride(-1) == 1 or X.shape[-1] == 1, "B/C must be contiguous in time")
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None:
            check(v.dtype == torch.float32, f"{name} must be fp32")
            check(tuple(v.shape) == (dim,) and (v.stride(-1) == 1 or v.shape[-1] == 1), f"{name} shape")
    if z is not None:
        check(z.dtype == u.dtype, "z must have u's dtype")
        check(z.stride(-1) == 1 or z.shape[-1] == 1, "z must be contiguous in time")
        check(tuple(z.shape) == (batch, dim, seqlen), "z shape")
    CALLS["selective_scan_fwd"] += 1
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True)
"""
)

_SCAN_INTERFACE = """
try:  # the extension exists only when mamba-ssm was built with MAMBA_KEEP_CUDA_BUILD=TRUE
    import selective_scan_cuda
except ImportError:
    selective_scan_cuda = None


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, cu_seqlens=None):
    if selective_scan_cuda is None:
        raise ImportError("selective_scan_cuda is not available")
    u = u if u.stride(-1) == 1 else u.contiguous()
    delta = delta if delta.stride(-1) == 1 else delta.contiguous()
    D = D.contiguous() if D is not None else None
    B = B if B.stride(-1) == 1 else B.contiguous()
    C = C if C.stride(-1) == 1 else C.contiguous()
    z = z if z is None or z.stride(-1) == 1 else z.contiguous()
    B = B.unsqueeze(1) if B.dim() == 3 else B
    C = C.unsqueeze(1) if C.dim() == 3 else C
    out, last_state = selective_scan_cuda.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens)
    return (out, last_state) if return_last_state else out
"""

# --- mamba-ssm's Triton kernels -----------------------------------------------------------------
_STATE_UPDATE = """
import torch
import torch.nn.functional as F

from standin_calls import CALLS


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           state_batch_indices=None):
    has_heads = state.dim() > 3
    state_h = state if has_heads else state.unsqueeze(1)  # a view: updates reach ``state``
    x = x if x.dim() == 3 else x.unsqueeze(1)
    dt = dt if dt.dim() == 3 else dt.unsqueeze(1)
    A = A if A.dim() == 3 else A.unsqueeze(0)
    B, C = (t if t.dim() == 3 else t.unsqueeze(1) for t in (B, C))
    D, dt_bias = (t if t is None or t.dim() == 2 else t.unsqueeze(0) for t in (D, dt_bias))
    z = z if z is None or z.dim() == 3 else z.unsqueeze(1)
    batch, nheads, dim, dstate = state_h.shape
    assert tuple(x.shape) == (batch, nheads, dim)
    assert dt.shape == x.shape
    assert tuple(A.shape) == (nheads, dim, dstate)
    ngroups = B.shape[1]
    assert nheads % ngroups == 0, "nheads must be divisible by ngroups"
    assert tuple(B.shape) == (batch, ngroups, dstate)
    assert C.shape == B.shape
    if D is not None:
        assert tuple(D.shape) == (nheads, dim)
    if z is not None:
        assert z.shape == x.shape
    if dt_bias is not None:
        assert tuple(dt_bias.shape) == (nheads, dim)
    CALLS["selective_state_update"] += 1
    # The update itself, in fp32 as the kernel computes it (written here, not shared with lit_seqrl).
    rep = nheads // ngroups
    Bh = B.float().repeat_interleave(rep, dim=1)[:, :, None, :]  # (b h 1 n)
    Ch = C.float().repeat_interleave(rep, dim=1)[:, :, None, :]
    dtf = dt.float() + (dt_bias.float() if dt_bias is not None else 0.0)
    dtf = F.softplus(dtf) if dt_softplus else dtf  # (b h p)
    new = state_h.float() * torch.exp(A.float() * dtf[..., None]) + Bh * (dtf * x.float())[..., None]
    state_h.copy_(new.to(state_h.dtype))
    out = (new * Ch).sum(-1)  # (b h p)
    if D is not None:
        out = out + x.float() * D.float()
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(x.dtype)
    return out if has_heads else out.squeeze(1)
"""

_SSD = """
from lit_seqrl.ops.ssd import ssd_ref
from standin_calls import CALLS


def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                              seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                              return_final_states=False, return_varlen_states=False):
    batch, seqlen, nheads, headdim = x.shape
    _, _, ngroups, dstate = B.shape
    assert nheads % ngroups == 0
    assert tuple(B.shape) == (batch, seqlen, ngroups, dstate)
    assert tuple(dt.shape) == (batch, seqlen, nheads)
    assert tuple(A.shape) == (nheads,)
    assert C.shape == B.shape
    if z is not None:
        assert z.shape == x.shape
    if D is not None:
        assert tuple(D.shape) in ((nheads, headdim), (nheads,))
    if initial_states is not None:
        assert tuple(initial_states.shape) == (batch, nheads, headdim, dstate)
    CALLS["mamba_chunk_scan_combined"] += 1
    return ssd_ref(x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_states, return_final_states)
"""


def write_standins(root: Path, *, scan_extension: bool = True, conv: bool = True) -> Path:
    """Write the stand-in packages under ``root`` (created) and return it.

    Args:
        scan_extension: write the compiled ``selective_scan_cuda`` stand-in; without it,
            ``mamba_ssm.ops.selective_scan_interface`` imports and ``selective_scan_fn`` raises,
            as mamba-ssm built without ``MAMBA_KEEP_CUDA_BUILD=TRUE``.
        conv: write ``causal_conv1d`` (and its extension) too.
    """
    files = {
        "standin_calls.py": _CALLS,
        "mamba_ssm/__init__.py": "",
        "mamba_ssm/ops/__init__.py": "",
        "mamba_ssm/ops/selective_scan_interface.py": _SCAN_INTERFACE,
        "mamba_ssm/ops/triton/__init__.py": "",
        "mamba_ssm/ops/triton/selective_state_update.py": _STATE_UPDATE,
        "mamba_ssm/ops/triton/ssd_combined.py": _SSD,
    }
    if scan_extension:
        files["selective_scan_cuda.py"] = _SCAN_CUDA
    if conv:
        files["causal_conv1d_cuda.py"] = _CONV_CUDA
        files["causal_conv1d/__init__.py"] = _CONV_PKG
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def purge_standins() -> None:
    """Drop every stand-in module from ``sys.modules`` (the next import reads the files again)."""
    for name in list(sys.modules):
        if name.split(".")[0] in STANDIN_ROOTS:
            del sys.modules[name]
