"""Choosing between an optional fast kernel and our pure-PyTorch path, per call.

``backend="auto"`` uses the kernel only when its package *and its compiled extension* import,
the tensors are on CUDA, and the call meets the kernel's own argument rules (dtypes, widths,
layouts: each dispatcher states them in an ``*_kernel_issue`` helper). Otherwise it falls back
to PyTorch, warning once per distinct reason. ``"cuda"`` insists on the kernel and raises
:class:`KernelUnavailableError` with the reason instead of falling back; ``"torch"`` never uses it.

Optional packages are probed lazily, once, and any exception at import (a CPU-only install of
mamba-ssm raises ImportError or worse) only disables the fast path, with one warning. The
Python module of a kernel can import while its compiled extension is missing (mamba-ssm built
without ``MAMBA_KEEP_CUDA_BUILD=TRUE`` has no ``selective_scan_cuda``; the kernel then raises
when called), so a kernel is usable only when its extension imports too.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import Literal

import torch

Backend = Literal["auto", "cuda", "torch"]
BACKENDS = ("auto", "cuda", "torch")

#: Dtypes the official CUDA kernels are compiled for (fp64 is not among them).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: How to get each compiled extension when it is missing.
INSTALL_HINTS = {
    "selective_scan_cuda": (
        "mamba-ssm was installed without its CUDA extension; reinstall it with "
        "MAMBA_KEEP_CUDA_BUILD=TRUE: MAMBA_KEEP_CUDA_BUILD=TRUE pip install --no-build-isolation mamba-ssm"
    ),
}


class KernelUnavailableError(RuntimeError):
    """``backend="cuda"`` was requested but the optional kernel cannot be used."""


@cache
def probe(module: str) -> ModuleType | None:
    """Import ``module`` once; return None (and warn once) if that fails for any reason."""
    try:
        return importlib.import_module(module)
    except Exception as err:  # compiled extensions fail in many ways besides ImportError
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            # Installed but broken is worth telling; simply absent is the normal CPU case.
            warnings.warn(
                f"lit_seqrl: {module} is installed but failed to import ({err}); using PyTorch ops",
                stacklevel=2,
            )
        return None


def probe_kernel(module: str, extensions: tuple[str, ...] = ()) -> ModuleType | None:
    """``module`` if it and every compiled extension in ``extensions`` import, else None."""
    for ext in extensions:
        if _import_quietly(ext) is None:
            return None
    return probe(module)


def missing_kernel(module: str, extensions: tuple[str, ...] = ()) -> str | None:
    """Why ``probe_kernel(module, extensions)`` fails (None when it does not)."""
    for ext in extensions:
        if _import_quietly(ext) is None:
            hint = INSTALL_HINTS.get(ext, 'install the extra: pip install "lit-seqrl[cuda]"')
            return f"{module} needs its compiled extension {ext}, which is not importable; {hint}"
    if probe(module) is None:
        return f'{module} is not importable; install the extra: pip install "lit-seqrl[cuda]"'
    return None


def clear_probes() -> None:
    """Forget every probe result (after installing a kernel package in a running process, or in tests)."""
    probe.cache_clear()
    _import_quietly.cache_clear()
    _installed.cache_clear()
    _warn_fallback.cache_clear()


@cache
def _import_quietly(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except Exception:  # absent or broken: either way the kernel cannot run
        return None


def on_cuda(*tensors: torch.Tensor | None) -> bool:
    """Whether every given tensor lives on a CUDA device (None entries are skipped).

    The one place that decides "this call could run on the GPU kernels"; tests replace it to
    drive the kernel paths with CPU tensors and stand-in kernel modules.
    """
    return all(t.is_cuda for t in tensors if t is not None)


def use_kernel(
    backend: Backend,
    module: str,
    *tensors: torch.Tensor | None,
    extensions: tuple[str, ...] = (),
    issue: Callable[[], str | None] | None = None,
) -> bool:
    """Whether this call should go to the kernel in ``module`` (see module docstring).

    Args:
        backend: "auto", "cuda" or "torch".
        module: the kernel's Python module; ``extensions``: compiled modules it needs at call time.
        tensors: the call's tensors, all of which must be on CUDA.
        issue: a function saying why the kernel cannot take these arguments (None when it
            can), the dispatcher's ``*_kernel_issue`` helper; called only when the kernel is
            otherwise usable, so the PyTorch path pays nothing for it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    cuda_tensors = on_cuda(*tensors)
    if backend == "cuda":
        missing = missing_kernel(module, extensions)
        if missing is not None:
            raise KernelUnavailableError(f'backend="cuda": {missing}')
        if not cuda_tensors:
            device = next(t.device for t in tensors if t is not None)
            raise KernelUnavailableError(f'backend="cuda" needs CUDA tensors, got tensors on {device}')
        reason = None if issue is None else issue()
        if reason is not None:
            raise KernelUnavailableError(f'backend="cuda": {module} cannot take this call: {reason}')
        return True
    if not cuda_tensors:
        return False
    if probe_kernel(module, extensions) is None:
        if _installed(module):  # installed but unusable is worth telling; absent is the normal case
            _warn_fallback(module, missing_kernel(module, extensions) or "it failed to import")
        return False
    reason = None if issue is None else issue()
    if reason is not None:
        _warn_fallback(module, reason)
        return False
    return True


@cache
def _installed(module: str) -> bool:
    """Whether the distribution providing ``module``'s top-level package is present at all."""
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):  # e.g. an entry of None in sys.modules
        return False


@cache
def _warn_fallback(module: str, issue: str) -> None:
    warnings.warn(f"lit_seqrl: {module} cannot take this call ({issue}); using PyTorch ops", stacklevel=4)


def dtype_issue(
    name: str, t: torch.Tensor | None, allowed: tuple[torch.dtype, ...] = KERNEL_DTYPES
) -> str | None:
    """A reason string if ``t`` (when given) is not of one of the ``allowed`` dtypes."""
    if t is None or t.dtype in allowed:
        return None
    return f"{name} has dtype {t.dtype}, the kernel takes {', '.join(str(d) for d in allowed)}"


def first_issue(*issues: str | None) -> str | None:
    """The first non-None reason, or None."""
    return next((i for i in issues if i is not None), None)
