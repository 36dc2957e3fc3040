"""Chunked vs sequential selective scan (Mamba's SSM) on the CPU, forward and forward+backward.

One Mamba layer's scan as the backbone calls it (Δ bias + softplus, D skip, silu gate): by default
d_inner=128 (a d_model=64 block), d_state=16, batch 1, one CPU thread (with several threads on a
busy machine, every parallel op waits for a descheduled thread and timings become noise). Times
are the best of ``--reps`` runs, alternating between the two implementations.

    python benchmarks/scan_speed.py            # L = 256, 1024, 4096
    python benchmarks/scan_speed.py --quick    # L = 256, 1024, fewer repetitions
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

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


def best_times(inputs: dict[str, torch.Tensor], backward: bool, reps: int) -> tuple[float, float]:
    ref, chunked = float("inf"), float("inf")
    for _ in range(reps):
        ref = min(ref, timed(selective_scan_ref, inputs, backward))
        chunked = min(chunked, timed(selective_scan_chunked, inputs, backward))
    return ref, chunked


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
    lengths = [256, 1024] if args.quick else [256, 1024, 4096]
    reps = args.reps or (3 if args.quick else 5)

    print(
        f"selective scan, batch={args.batch} d_inner={args.d_inner} d_state={args.d_state}, fp32, "
        f"CPU threads={torch.get_num_threads()}, best of {reps}"
    )
    header = f"{'L':>6}{'pass':>10}{'sequential ms':>15}{'chunked ms':>12}{'speedup':>9}{'max |diff|':>12}"
    print(header)
    print("-" * len(header))
    speedups: dict[tuple[int, str], float] = {}
    for L in lengths:
        inputs = make_inputs(args.batch, args.d_inner, args.d_state, L)
        with torch.no_grad():
            diff = selective_scan_chunked(**inputs, delta_softplus=True) - selective_scan_ref(
                **inputs, delta_softplus=True
            )
        for name, backward in (("fwd", False), ("fwd+bwd", True)):
            timed(selective_scan_chunked, make_inputs(1, 8, 4, 64), backward)  # warm up thread pools
            ref, chunked = best_times(inputs, backward, reps)
            speedups[L, name] = ref / chunked
            print(
                f"{L:>6}{name:>10}{1e3 * ref:>15.1f}{1e3 * chunked:>12.1f}{ref / chunked:>8.1f}x{diff.abs().max():>12.1e}"
            )
    print("note: the RESULT below is the forward+backward (training) speedup; forward alone is in the table")
    print(f"RESULT scan_speedup_L1024: {speedups[1024, 'fwd+bwd']:.1f} x (goal >= 5)")


if __name__ == "__main__":
    main()
