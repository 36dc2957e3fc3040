"""Training step time of every sequence backbone against the transformer's (DT's), side by side.

Each backbone is built through the registry at the same width, depth, context (K) and batch, and
trained for a few steps on the same random tokens with some rows left-padded (as the decision
agents' windows at an episode's start): forward, a linear head, backward and AdamW. Rounds take
turns over the backbones (interleaved), and each backbone's time is the median over rounds, so a
busy machine slows all of them alike. The agents' embeddings and heads are the same whatever the
backbone, so the ratios here are the part of a training step the backbone changes.

Sizes: ``experiment`` is the backbones experiment (configs/experiments/backbones.yaml: d_model 64,
2 layers, batch 32, K = 20), ``paper`` the Decision Transformer paper's (d_model 128, 3 layers,
batch 64, K = 20). Tokens: 3K interleaved (return, state, action) per window, except DS4, which the
experiment runs on K stacked tokens.

    python benchmarks/backbone_speed.py                      # both sizes
    python benchmarks/backbone_speed.py --size experiment --rounds 3
    python benchmarks/backbone_speed.py --profile            # where a DMamba step's time goes
    python benchmarks/backbone_speed.py --free-scan          # + the Mamba variants with a scan that costs nothing
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones import mamba, mamba2, s4_kernel
from lit_seqrl.ops import selective_scan
from lit_seqrl.registry import build_backbone

SIZES = {  # d_model, n_layers, batch
    "experiment": (64, 2, 32),
    "paper": (128, 3, 64),
}
#: variant -> (backbone name, extra keyword arguments, tokens per step of context)
VARIANTS: dict[str, tuple[str, dict[str, Any], int]] = {
    "DT": ("transformer", {"n_heads": 1, "dropout": 0.1}, 3),
    "DMamba": ("mamba", {}, 3),
    "Mamba-2": ("mamba2", {}, 3),
    "MambaDM": ("mambadm", {"local_window": 6, "fusion": "gate"}, 3),
    "DS4": ("s4", {}, 1),
    "DC": ("dc", {"window": 6, "token_types": 3}, 3),
}


@contextmanager
def previous_ops() -> Iterator[None]:
    """This round's ops undone: autograd through the chunked scan, S4's dense matrix power."""
    saved = selective_scan.selective_scan_chunked, s4_kernel.ROW_POWER_MAX_L
    selective_scan.selective_scan_chunked = partial(saved[0], implementation="graph")
    s4_kernel.ROW_POWER_MAX_L = 0
    try:
        yield
    finally:
        selective_scan.selective_scan_chunked, s4_kernel.ROW_POWER_MAX_L = saved


#: ``--before`` rows: the variants this round changed, run on :func:`previous_ops`.
BEFORE = ("DMamba", "MambaDM", "DS4")


def _free_selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor, **_: Any
) -> Tensor:
    """A stand-in for the selective scan costing a few element-wise passes over ``(B, E, L)``,
    with a gradient to every input, so the rest of the block runs forward and backward as usual."""
    mix = (B.sum(1, keepdim=True) + C.sum(1, keepdim=True)) * A.sum()  # (B 1 L)
    return (u * D[:, None] + delta + mix) * F.silu(z)


def _free_ssd(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, *_: Any, D: Tensor, **__: Any
) -> Tensor:
    """The Mamba-2 counterpart of :func:`_free_selective_scan`: ``x (B L H P)``, ``dt (B L H)``."""
    mix = (B.sum((-2, -1)) + C.sum((-2, -1)))[:, :, None, None] * A.sum()  # (B L 1 1)
    return x * D[:, None] + dt[..., None] + mix


@contextmanager
def free_scan() -> Iterator[None]:
    """Mamba's and Mamba-2's scans replaced by :func:`_free_selective_scan` / :func:`_free_ssd`:
    the step time the rest of those blocks costs, i.e. what no faster scan can go below."""
    saved = mamba.selective_scan, mamba2.ssd
    mamba.selective_scan, mamba2.ssd = _free_selective_scan, _free_ssd
    try:
        yield
    finally:
        mamba.selective_scan, mamba2.ssd = saved


#: ``--free-scan`` rows: the variants whose scan :func:`free_scan` replaces.
FREE_SCAN = ("DMamba", "Mamba-2", "MambaDM")


class Trainee:
    """One backbone with a linear head and its optimiser, on fixed inputs."""

    def __init__(
        self,
        name: str,
        kwargs: dict[str, Any],
        d: int,
        layers: int,
        batch: int,
        L: int,
        ops: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        self.ops = ops
        torch.manual_seed(0)
        self.backbone = build_backbone(name, d_model=d, n_layers=layers, **kwargs)
        self.head = nn.Linear(d, 1)
        params = [*self.backbone.parameters(), *self.head.parameters()]
        self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
        self.x = torch.randn(batch, L, d)
        self.mask = torch.ones(batch, L, dtype=torch.bool)
        self.mask[: batch // 4, : L // 3] = False  # a quarter of the windows start mid-context

    def step(self) -> None:
        with self.ops():
            y = self.head(self.backbone(self.x, self.mask))
            loss = y.square().mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


def measure(
    size: str, K: int, steps: int, rounds: int, before: bool = False, free: bool = False
) -> dict[str, float]:
    """Median ms per training step of every variant at ``size``, rounds interleaved."""
    d, layers, batch = SIZES[size]
    trainees = {
        v: Trainee(name, kw, d, layers, batch, per_step * K) for v, (name, kw, per_step) in VARIANTS.items()
    }
    if before:
        for v in BEFORE:
            name, kw, per_step = VARIANTS[v]
            trainees[f"{v} before"] = Trainee(name, kw, d, layers, batch, per_step * K, previous_ops)
    if free:
        for v in FREE_SCAN:
            name, kw, per_step = VARIANTS[v]
            trainees[f"{v} free scan"] = Trainee(name, kw, d, layers, batch, per_step * K, free_scan)
    for t in trainees.values():  # warm-up: first-call allocations, thread pools
        t.step()
    times: dict[str, list[float]] = {v: [] for v in trainees}
    for _ in range(rounds):
        for v, t in trainees.items():
            start = time.perf_counter()
            for _ in range(steps):
                t.step()
            times[v].append((time.perf_counter() - start) / steps)
    return {v: 1e3 * statistics.median(ts) for v, ts in times.items()}


#: DMamba sizes profiled by ``--profile``: d_model, n_layers, batch, tokens.
PROFILE_CASES = [(64, 2, 32, 60), (128, 3, 64, 60), (64, 2, 4, 1024)]
CATEGORIES = ("projections", "conv", "scan fwd", "scan bwd", "element-wise + rest")


def category(event: Any) -> str:
    """Where a profiled op belongs; ops inside the scan's Function count as the scan."""
    node = event
    while node is not None:
        if node.name == "SelectiveScanFn":
            return "scan fwd"
        if node.name.startswith("SelectiveScanFnBackward"):
            return "scan bwd"
        node = node.cpu_parent
    if "convolution" in event.name:
        return "conv"
    if event.name in ("aten::mm", "aten::addmm", "aten::bmm"):
        return "projections"
    return "element-wise + rest"


def profile(threads: int) -> None:
    """Self CPU time of one DMamba training step, by category, at :data:`PROFILE_CASES`."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    print(f"DMamba training step (fwd + bwd + AdamW) under torch.profiler, CPU threads={threads}")
    header = f"{'d_model':>7}{'layers':>7}{'batch':>6}{'L':>6}{'step ms':>9}" + "".join(
        f"{c:>21}" for c in CATEGORIES
    )
    print(header)
    print("-" * len(header))
    for d, layers, batch, L in PROFILE_CASES:
        t = Trainee("mamba", {}, d, layers, batch, L)
        for _ in range(2):
            t.step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            t.step()
        totals = dict.fromkeys(CATEGORIES, 0.0)
        for event in prof.events():
            totals[category(event)] += event.self_cpu_time_total
        total = sum(totals.values())
        cells = "".join(f"{f'{1e-3 * v:.0f} ms ({100 * v / total:.0f}%)':>21}" for v in totals.values())
        print(f"{d:>7}{layers:>7}{batch:>6}{L:>6}{1e-3 * total:>9.0f}{cells}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=[*SIZES, "both"], default="both")
    p.add_argument("--context", type=int, default=20, help="K, timesteps per window")
    p.add_argument("--steps", type=int, default=3, help="training steps per variant per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1: stable timings on a shared machine)"
    )
    p.add_argument("--profile", action="store_true", help="only profile DMamba steps (no RESULT line)")
    p.add_argument("--before", action="store_true", help="also run the changed variants on the previous ops")
    p.add_argument(
        "--free-scan",
        action="store_true",
        help="also run the Mamba variants with a scan that costs nothing (the floor a faster scan can reach)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        profile(args.threads)
        return
    sizes = list(SIZES) if args.size == "both" else [args.size]

    print(f"training step (fwd + bwd + AdamW), K={args.context}, CPU threads={torch.get_num_threads()}, "
          f"median of {args.rounds} rounds x {args.steps} steps")  # fmt: skip
    header = (
        f"{'size':<12}{'variant':<20}{'backbone':<13}{'tokens':>7}{'ms/step':>10}{'steps/s':>9}{'vs DT':>8}"
    )
    print(header)
    print("-" * len(header))
    worst: dict[str, tuple[float, str]] = {}
    for size in sizes:
        ms = measure(size, args.context, args.steps, args.rounds, args.before, args.free_scan)
        for v, t in ms.items():
            name, _, per_step = VARIANTS[v.removesuffix(" before").removesuffix(" free scan")]
            ratio = t / ms["DT"]
            print(
                f"{size:<12}{v:<20}{name:<13}{per_step * args.context:>7}{t:>10.1f}{1e3 / t:>9.2f}{ratio:>7.2f}x"
            )
            if v in VARIANTS and v != "DT" and ratio > worst.get(size, (0.0, ""))[0]:
                worst[size] = (ratio, v)
    for size, (ratio, v) in worst.items():
        print(f"slowest against DT at {size} size: {v} {ratio:.2f}x")
    size = "experiment" if "experiment" in worst else sizes[0]
    print(f"RESULT slowest_ssm_vs_dt_{size}: {worst[size][0]:.2f} x step time (goal <= 1.2)")


if __name__ == "__main__":
    main()
