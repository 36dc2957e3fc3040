"""Timing shared by the benchmark scripts (imported as a sibling module: run them as ``python benchmarks/X.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def train_step(agent: Any, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> None:
    """One bare training step of an agent as the trainer runs it: loss, backward, clip 0.25, AdamW."""
    loss, _ = agent._loss(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.25)
    opt.step()


def median_ms(fns: list[Callable[[], object]], reps: int) -> list[float]:
    """Median wall time of each function in ms, calls interleaved (machine load hits all alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [1e3 * statistics.median(t) for t in times]
