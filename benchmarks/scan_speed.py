"""Chunked vs sequential selective scan (Mamba's SSM) on the CPU, forward and forward+backward.

One Mamba layer's scan as the backbone calls it (Δ bias + softplus, D skip, silu gate): by default
d_inner=128 (a d_model=64 block), d_state=16, batch 1, one CPU thread (with several threads on a
busy machine, every parallel op waits for a descheduled thread and timings become noise), plus
the backbones experiment's training case (batch 32, L = 60). Times are the best of ``--reps``
runs, alternating between three implementations: the sequential reference, ``graph`` (the
chunked recurrence differentiated by autograd, the previous default) and ``function`` (the
default: a custom autograd Function with a hand-derived backward).

    python benchmarks/scan_speed.py            # L = 60 (batch 32), 256, 1024, 4096
    python benchmarks/scan_speed.py --quick    # L = 60 (batch 32), 256, 1024, fewer repetitions
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

from lit_seqrl.ops.selective_scan import selective_scan_chunked, selective_scan_ref


def make_inputs(batch: int, d: int, n: int, L: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "u": torch.randn(batch, d, L, generator=g),
        "delta": torch.randn(batch, d, L, generator=g) * 0.5 - 2.0,
        "A": -torch.arange(1.0, n + 1).repeat(d, 1),  # Mamba's S4D-real initialisation
        "B": torch.randn(batch, n, L, generator=g),
        "C": torch.randn(batch, n, L, generator=g),
        "D": torch.ones(d),
        "z": torch.randn(batch, d, L, generator=g),
        "delta_bias": torch.randn(d, generator=g) * 0.1,
    }


def timed(fn: Callable, inputs: dict[str, torch.Tensor], backward: bool) -> float:
    leaves = {k: v.detach().requires_grad_(backward) for k, v in inputs.items()}
    start = time.perf_counter()
    with torch.set_grad_enabled(backward):
        y = fn(**leaves, delta_softplus=True)
        if backward:
            y.square().mean().backward()
    return time.perf_counter() - start


IMPLEMENTATIONS: dict[str, Callable] = {
    "sequential": selective_scan_ref,
    "graph": partial(selective_scan_chunked, implementation="graph"),
    "function": selective_scan_chunked,
}


def best_times(inputs: dict[str, torch.Tensor], backward: bool, reps: int) -> dict[str, float]:
    best = dict.fromkeys(IMPLEMENTATIONS, float("inf"))
    for _ in range(reps):
        for name, fn in IMPLEMENTATIONS.items():
            best[name] = min(best[name], timed(fn, inputs, backward))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="L = 256, 1024 and fewer repetitions")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--d-inner", type=int, default=128)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 5, quick 3)")
    p.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1: stable timings on a shared machine)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(32, 60)] + [(args.batch, L) for L in ([256, 1024] if args.quick else [256, 1024, 4096])]
    reps = args.reps or (3 if args.quick else 5)

    print(
        f"selective scan, d_inner={args.d_inner} d_state={args.d_state}, fp32, "
        f"CPU threads={torch.get_num_threads()}, best of {reps}"
    )
    header = (
        f"{'batch':>5}{'L':>6}{'pass':>9}{'sequential ms':>15}{'graph ms':>10}{'function ms':>13}"
        f"{'graph x':>9}{'function x':>12}{'max |diff|':>12}"
    )
    print(header)
    print("-" * len(header))
    speedups: dict[tuple[int, str], float] = {}
    for batch, L in cases:
        inputs = make_inputs(batch, args.d_inner, args.d_state, L)
        with torch.no_grad():
            diff = selective_scan_chunked(**inputs, delta_softplus=True) - selective_scan_ref(
                **inputs, delta_softplus=True
            )
        for name, backward in (("fwd", False), ("fwd+bwd", True)):
            timed(selective_scan_chunked, make_inputs(1, 8, 4, 64), backward)  # warm up thread pools
            t = best_times(inputs, backward, reps)
            ref = t["sequential"]
            speedups[L, name] = ref / t["function"]
            print(
                f"{batch:>5}{L:>6}{name:>9}{1e3 * ref:>15.1f}{1e3 * t['graph']:>10.1f}{1e3 * t['function']:>13.1f}"
                f"{ref / t['graph']:>8.1f}x{ref / t['function']:>11.1f}x{diff.abs().max():>12.1e}"
            )
    print("note: the RESULT lines are the forward+backward (training) speedups of the default (function)")
    print(f"RESULT scan_speedup_L1024: {speedups[1024, 'fwd+bwd']:.1f} x (goal >= 5)")
    if (4096, "fwd+bwd") in speedups:
        print(f"RESULT scan_speedup_L4096: {speedups[4096, 'fwd+bwd']:.1f} x (goal >= 10)")


if __name__ == "__main__":
    main()
