"""``lit-seqrl data collect | info | list``."""

from __future__ import annotations

import minari
import numpy as np
from rich.console import Console
from rich.table import Table

from lit_seqrl.data.collect import collect_dataset
from lit_seqrl.data.episodes import load_offline_dataset


def collect(dataset_id: str, overwrite: bool = False, num_episodes: int | None = None) -> None:
    """Generate a built-in dataset (a progress bar shows the episodes)."""
    data = collect_dataset(dataset_id, overwrite=overwrite, progress=True, num_episodes=num_episodes)
    print(f"{dataset_id}: {len(data.episodes)} episodes, {data.num_steps} steps")


def info(dataset_id: str) -> None:
    """Episodes, steps, return statistics and spaces of a dataset."""
    data = load_offline_dataset(dataset_id)
    returns = np.array([e.total_return for e in data.episodes])
    lengths = np.array([e.length for e in data.episodes])
    table = Table(title=dataset_id, show_header=False)
    rows = {
        "env": data.env_id or "-",
        "episodes": len(data.episodes),
        "steps": data.num_steps,
        "episode length min/mean/max": f"{lengths.min()} / {lengths.mean():.1f} / {lengths.max()}",
        "return min/mean/max": f"{returns.min():.2f} / {returns.mean():.2f} / {returns.max():.2f}",
        "reference (random, expert)": f"{data.ref_min_score}, {data.ref_max_score}",
        "observation space": str(data.observation_space),
        "action space": str(data.action_space),
    }
    for key, value in rows.items():
        table.add_row(key, str(value))
    Console().print(table)


def list() -> None:
    """Local minari datasets."""
    local = minari.list_local_datasets()
    if not local:
        print("no local datasets (generate one with `lit-seqrl data collect lit_seqrl/pendulum/mixed-v0`)")
        return
    for dataset_id in sorted(local):
        print(dataset_id)
