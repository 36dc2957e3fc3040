"""Peak memory and time of the naive vs chunked Cauchy kernel (the inner loop of the S4 kernel).

Each implementation runs in its own subprocess; peak memory is the process's resident-set high-water
mark (``VmHWM``, reset just before the call where the kernel allows it) minus its resident set
before the call, so it counts what PyTorch actually allocated, inputs excluded. The outputs are
saved to a temporary directory and compared.

    python benchmarks/cauchy_memory.py            # H=256, N=64, L=16384 (naive needs ~4.5 GB)
    python benchmarks/cauchy_memory.py --quick    # L=4096
    python benchmarks/cauchy_memory.py --quick --backward   # forward + backward
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lit_seqrl.ops.cauchy import cauchy_chunked, cauchy_naive


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(impl: str, H: int, N: int, L: int, chunk: int | None, out_file: str, backward: bool) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.complex(-0.5 * torch.ones(H, N), 100 * torch.randn(H, N, generator=g))  # S4-like poles
    v = torch.randn(H, N, dtype=torch.complex64, generator=g)
    omega = torch.polar(torch.ones(L), -2 * torch.pi * torch.arange(L) / (2 * L))
    z = (20 * (1 - omega) / (1 + omega))[None].expand(H, L).to(torch.complex64).contiguous()
    fn = cauchy_naive if impl == "naive" else lambda v, z, w: cauchy_chunked(v, z, w, chunk_size=chunk)
    fn(v[:2, :4], z[:2, :16], w[:2, :4])  # warm up kernels and thread pools outside the measurement
    for t in (v, z, w):
        t.requires_grad_(backward)
    rss_before = _status_kib("VmRSS")
    exact = _reset_peak()
    start = time.perf_counter()
    out = fn(v, z, w)
    if backward:  # gradients w.r.t. all three inputs, as in training
        torch.autograd.grad(out, (v, z, w), torch.ones_like(out))
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") - rss_before
    torch.save(out.detach(), out_file)
    print(json.dumps({"peak_mib": peak / 1024, "seconds": seconds, "exact_peak": exact}))


def run(impl: str, args: argparse.Namespace, out_file: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        impl,
        "--H",
        str(args.H),
        "--N",
        str(args.N),
        "--L",
        str(args.L),
    ]
    cmd += ["--out", out_file] + (["--chunk", str(args.chunk)] if args.chunk else [])
    cmd += ["--backward"] if args.backward else []
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{impl} worker failed (rc {res.returncode}):\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="L=4096 instead of 16384")
    p.add_argument("--H", type=int, default=256)
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--L", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None, help="chunk size over L (default: automatic)")
    p.add_argument(
        "--backward", action="store_true", help="measure forward + backward (naive needs ~3x more)"
    )
    p.add_argument("--worker", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.L = args.L or (4096 if args.quick else 16384)
    if args.worker:
        worker(args.worker, args.H, args.N, args.L, args.chunk, args.out, args.backward)
        return

    with tempfile.TemporaryDirectory() as tmp:
        results = {impl: run(impl, args, f"{tmp}/{impl}.pt") for impl in ("naive", "chunked")}
        ref, out = torch.load(f"{tmp}/naive.pt"), torch.load(f"{tmp}/chunked.pt")
    rel_err = ((out - ref).abs().max() / ref.abs().max()).item()
    temp_mib = 2 * args.H * args.N * args.L * 8 / 2**20  # (H N L) complex64: z - w, then v / (z - w)
    print(
        f"Cauchy kernel H={args.H} N={args.N} L={args.L} complex64, {'forward + backward' if args.backward else 'forward'}"
    )
    print(f"{'impl':<10}{'peak MiB':>12}{'time s':>10}")
    for impl, r in results.items():
        print(f"{impl:<10}{r['peak_mib']:>12.1f}{r['seconds']:>10.3f}")
    print(
        f"analytic naive temporaries: {temp_mib:.0f} MiB; max |chunked - naive| / max |naive| = {rel_err:.2e}"
    )
    if not all(r["exact_peak"] for r in results.values()):
        print("note: could not reset the RSS peak; numbers are upper bounds")
    if rel_err > 1e-4:
        raise SystemExit(f"outputs differ: relative error {rel_err:.2e}")
    ratio = results["naive"]["peak_mib"] / max(results["chunked"]["peak_mib"], 1e-9)
    print(f"RESULT cauchy_memory_ratio: {ratio:.1f} x (goal >= 8)")


if __name__ == "__main__":
    main()
