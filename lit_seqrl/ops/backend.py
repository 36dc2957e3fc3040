"""Choosing between an optional fast kernel and our pure-PyTorch path, per call.

``backend="auto"`` uses the kernel only when its package imported and the tensors are on CUDA;
``"cuda"`` insists on the kernel (clear error if it is missing); ``"torch"`` never uses it.
Optional packages are probed lazily, once, and any exception at import (a CPU-only install of
mamba-ssm raises ImportError or worse) only disables the fast path, with one warning.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from functools import cache
from types import ModuleType
from typing import Literal

import torch

Backend = Literal["auto", "cuda", "torch"]
BACKENDS = ("auto", "cuda", "torch")


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


def use_kernel(backend: Backend, module: str, *tensors: torch.Tensor) -> bool:
    """Whether this call should go to the kernel in ``module`` (see module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    on_cuda = all(t.is_cuda for t in tensors if t is not None)
    if backend == "cuda":
        if probe(module) is None:
            raise KernelUnavailableError(
                f'backend="cuda" needs {module}, which is not importable; install the extra: pip install "lit-seqrl[cuda]"'
            )
        if not on_cuda:
            raise KernelUnavailableError(
                f'backend="cuda" needs CUDA tensors, got tensors on {tensors[0].device}'
            )
        return True
    return on_cuda and probe(module) is not None
