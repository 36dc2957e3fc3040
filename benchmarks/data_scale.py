"""Offline data at 1x and 20x the default dataset: in-memory vs lazy (HDF5 on demand), side by side.

Each (size, mode) cell runs in a fresh subprocess, so its peak RSS is its own: it builds the data
module (``setup``), then draws ``--batches`` training batches of 64 windows (K=20) through the
DataLoader. Lazy mode runs twice: with the data module's default cache (256 MiB, which holds
both datasets' pages) and with a ``--cache-mb`` cache smaller than the large file, so that its
bound is what is measured. Cells run interleaved, ``--rounds`` times; the table shows medians. A
DT training step (default config: width 128, 3 layers, K=20, batch 64, fwd + bwd + AdamW) is
timed in between to give the data loading share of a step.

The 1x dataset is the built-in default (``lit_seqrl/pendulum/mixed-v0``, generated if missing);
the 20x one is written from 20 copies of its episodes. Datasets go to a temporary directory
unless ``--datasets-dir`` is given (reuse it to skip generation). The fourth cell draws windows
block by block (``shuffle_buffer_mb`` = the small cache): lazy mode then reads a bounded part of
the file at a time.

    python benchmarks/data_scale.py [--scale 20] [--batches 200] [--rounds 3] [--cache-mb 24]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = "lit_seqrl/pendulum/mixed-v0"
BATCH, K = 64, 20


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> None:
    import torch

    from lit_seqrl.data import OfflineTrajectoryDataModule

    torch.set_num_threads(1)
    base = _rss_mb()  # interpreter + torch + lit_seqrl, before any data
    dm = OfflineTrajectoryDataModule(
        args.dataset,
        context_len=K,
        batch_size=BATCH,
        windows_per_epoch=args.batches * BATCH,
        val_fraction=0.0,
        reward_scale=0.01,
        data_mode=args.mode,
        cache_mb=args.cache_mb,
        shuffle_buffer_mb=args.buffer_mb,
    )
    t0 = time.perf_counter()
    dm.setup("fit")
    t_setup = time.perf_counter() - t0
    loader = dm.train_dataloader()
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(1 for _ in loader)
    t_load, c_load = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
    print(json.dumps({"base_mb": base, "peak_mb": _rss_mb(), "setup_s": t_setup, "ms_batch": 1e3 * t_load,
                      "cpu_ms_batch": 1e3 * c_load}))  # fmt: skip


def dt_step_ms(steps: int = 6) -> float:
    """Milliseconds of one default-config DT step (fwd + bwd + clip + AdamW) on the 1x data.

    One thread, like the data cells: the share of a step is then per core.
    """
    import torch

    torch.set_num_threads(1)
    from timing import train_step

    from lit_seqrl.agents import DecisionAgent
    from lit_seqrl.data import OfflineTrajectoryDataModule

    dm = OfflineTrajectoryDataModule(DEFAULT, reward_scale=0.01, batch_size=BATCH, context_len=K)
    dm.setup("fit")
    agent = DecisionAgent(eval_episodes=0, data_spec=dm.data_spec())
    batches = [b for _, b in zip(range(steps + 2), dm.train_dataloader())]
    opt = agent.configure_optimizers()["optimizer"]
    agent.train()
    times = []
    for b in batches:
        t0 = time.perf_counter()
        train_step(agent, opt, b)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[2:])


def make_scaled(scale: int) -> str:
    """Write ``scale`` copies of the default dataset's episodes as a new dataset; return its id."""
    from lit_seqrl.data.collect import ensure_dataset
    from lit_seqrl.data.episodes import load_offline_dataset
    from lit_seqrl.data.store import is_stored, write_dataset

    ensure_dataset(DEFAULT)
    scaled = f"bench/pendulum-x{scale}-v0"
    if not is_stored(scaled):
        data = load_offline_dataset(DEFAULT)
        episodes = [ep for _ in range(scale) for ep in data.episodes]
        write_dataset(
            scaled,
            episodes,
            data.env_id,
            ref_min_score=data.ref_min_score,
            ref_max_score=data.ref_max_score,
            description=f"{scale} copies of {DEFAULT} (benchmark)",
        )
    return scaled


def _default_cache_mb() -> float:
    """The data module's own default ``cache_mb`` (read from its signature, not restated here)."""
    import inspect

    from lit_seqrl.data import OfflineTrajectoryDataModule

    return float(inspect.signature(OfflineTrajectoryDataModule).parameters["cache_mb"].default)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-mb", type=float, default=24.0, help="the small lazy cache")
    parser.add_argument("--buffer-mb", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--datasets-dir", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default=DEFAULT, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    os.environ["MINARI_DATASETS_PATH"] = args.datasets_dir or tempfile.mkdtemp(prefix="data-scale-")
    Path(os.environ["MINARI_DATASETS_PATH"]).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sizes = {"1x": DEFAULT, f"{args.scale}x": make_scaled(args.scale)}
    print(f"datasets ready in {time.perf_counter() - t0:.0f} s under {os.environ['MINARI_DATASETS_PATH']}")

    default_cache_mb = _default_cache_mb()
    small = f"{args.cache_mb:g}M"
    # (data_mode, cache_mb, shuffle_buffer_mb): the last mode draws block by block through a
    # shuffle buffer the size of the small cache.
    modes = {"memory": ("memory", default_cache_mb, 0.0), "lazy": ("lazy", default_cache_mb, 0.0),
             f"lazy-{small}": ("lazy", args.cache_mb, 0.0),
             f"lazy-buf{small}": ("lazy", args.cache_mb, args.cache_mb)}  # fmt: skip
    cells = [(size, mode) for size in sizes for mode in modes]
    results: dict[tuple[str, str], list[dict]] = {cell: [] for cell in cells}
    steps = []
    for r in range(args.rounds):
        order = cells if r % 2 == 0 else cells[::-1]  # alternate, so drift hits every cell alike
        for size, mode in order:
            data_mode, cache_mb, buffer_mb = modes[mode]
            cmd = [sys.executable, __file__, "--child", "--dataset", sizes[size], "--mode", data_mode,
                   "--batches", str(args.batches), "--cache-mb", str(cache_mb),
                   "--buffer-mb", str(buffer_mb)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ).stdout
            results[(size, mode)].append(json.loads(out.strip().splitlines()[-1]))
        steps.append(dt_step_ms())

    def med(cell: tuple[str, str], key: str) -> float:
        return statistics.median(row[key] for row in results[cell])

    step = statistics.median(steps)
    big = f"{args.scale}x"
    print(f"\nbatch {BATCH} x K={K}, {args.batches} batches per cell, {args.rounds} rounds (medians), "
          f"lazy caches {default_cache_mb:g} MiB (default) and {args.cache_mb:g} MiB, DT step {step:.1f} ms")  # fmt: skip
    print(f"{'size':<5} {'mode':<13} {'peak RSS MiB':>12} {'over base':>10} {'setup s':>8} "
          f"{'ms/batch':>9} {'CPU ms/b':>9} {'windows/s':>10} {'% of step':>9}")  # fmt: skip
    for size, mode in cells:
        cell = (size, mode)
        ms = med(cell, "ms_batch")
        print(f"{size:<5} {mode:<13} {med(cell, 'peak_mb'):12.0f} {med(cell, 'peak_mb') - med(cell, 'base_mb'):10.0f} "
              f"{med(cell, 'setup_s'):8.2f} {ms:9.3f} {med(cell, 'cpu_ms_batch'):9.3f} {1e3 * BATCH / ms:10.0f} "
              f"{100 * ms / (ms + step):9.2f}")  # fmt: skip
    for mode in modes:
        growth = med((big, mode), "peak_mb") / med(("1x", mode), "peak_mb") - 1
        print(f"{mode}: peak RSS growth 1x -> {big}: {100 * growth:+.1f} %")
    for size in sizes:
        for mode in list(modes)[1:]:
            ratio = med((size, "memory"), "ms_batch") / med((size, mode), "ms_batch")
            cpu = med((size, "memory"), "cpu_ms_batch") / med((size, mode), "cpu_ms_batch")
            print(
                f"{size}: {mode} windows/s / in-memory windows/s = {ratio:.2f} (CPU time: {cpu:.2f}; goal >= 0.50)"
            )
    worst = max(100 * med(c, "ms_batch") / (med(c, "ms_batch") + step) for c in cells)
    print(f"largest data loading share of a DT step: {worst:.2f} % (goal < 5)")
    for mode in list(modes)[1:]:
        growth = med((big, mode), "peak_mb") / med(("1x", mode), "peak_mb") - 1
        print(f"RESULT {mode}_peak_rss_growth_{big}: {100 * growth:.1f} % (goal < 10)")
    for mode in list(modes)[1:]:
        ratio = med((big, "memory"), "ms_batch") / med((big, mode), "ms_batch")
        print(f"RESULT {mode}_windows_per_s_ratio_{big}: {ratio:.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
