"""``lit-seqrl data collect | import | info | list``: the command-line side of ``lit_seqrl.data``."""

from __future__ import annotations

from typing import Any

import minari
import numpy as np
from rich.console import Console
from rich.table import Table

from lit_seqrl.agents.policies import collect_with_policy
from lit_seqrl.data.collect import collect_dataset
from lit_seqrl.data.episodes import load_offline_dataset
from lit_seqrl.data.importers import import_dataset
from lit_seqrl.errors import ConfigError


def collect(
    dataset_id: str | None = None,
    overwrite: bool = False,
    num_episodes: int | None = None,
    policy: str | None = None,
    env: str | None = None,
    id: str | None = None,
    **rollout: Any,
) -> None:
    """Generate a built-in dataset, or roll out ``policy`` into dataset ``id`` (a progress bar shows
    the episodes); ``rollout`` holds the other arguments of :func:`collect_with_policy`."""
    if policy is not None:
        dataset_id = id or dataset_id
        if dataset_id is None:
            raise ConfigError("--policy needs --id, the dataset id to store the rollouts as")
        data = collect_with_policy(policy, dataset_id, env, overwrite=overwrite, **rollout)
    elif dataset_id is None:
        raise ConfigError("name a built-in dataset to generate, or a --policy to roll out (with --id)")
    else:
        data = collect_dataset(dataset_id, overwrite=overwrite, progress=True, num_episodes=num_episodes)
    returns = [e.total_return for e in data.episodes]
    print(
        f"{dataset_id}: {len(data.episodes)} episodes, {data.num_steps} steps, "
        f"return mean {sum(returns) / len(returns):.2f}"
    )


def import_(file: str, id: str, env: str | None = None, overwrite: bool = False) -> None:
    """Store a D4RL-style HDF5 file or pickled trajectory list as minari dataset ``id``."""
    summary = import_dataset(file, id, env, overwrite=overwrite)
    print(
        f"{summary.dataset_id}: {summary.episodes} episodes ({summary.terminated} terminated, "
        f"{summary.truncated} truncated), {summary.steps} steps, env {summary.env_id or '-'}"
    )
    print(f"train on it with: --data.dataset={summary.dataset_id}")


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
