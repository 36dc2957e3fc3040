"""Helpers shared by several test modules (test modules import this, never each other)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import lightning as L
import numpy as np
import pytest

from lit_seqrl.ops.backend import probe

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"  # optional real artefacts; tests using them skip if absent
# A small, fast configuration of the default job for CLI tests.
TINY = [
    "--model.backbone.d_model=32",
    "--model.backbone.n_layers=1",
    "--data.batch_size=16",
    "--data.windows_per_epoch=64",
    "--data.val_windows=16",
    "--model.eval_episodes=2",
    "--model.eval_num_envs=2",
]


# What OfflineTrajectoryDataModule.data_spec() says of Pendulum-v1 data: builds an agent without data.
PENDULUM_SPEC = {
    "obs_dim": 3, "act_dim": 1, "discrete": False, "env_id": "Pendulum-v1", "context_len": 20,
    "max_timestep": 201, "reward_scale": 0.01, "gamma": 1.0, "delayed_reward": False,
    "action_low": [-2.0], "action_high": [2.0], "ref_min_score": -1200.0, "ref_max_score": -150.0,
    "target_returns": [-150.0],
}  # fmt: skip


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """A CPU ``Trainer`` that prints and logs nothing; ``kwargs`` add to or override that."""
    quiet = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return L.Trainer(**{**quiet, **kwargs})


def run_cli(
    *args: str, cwd: Path | None = None, check: bool = True, timeout: int = 600
) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-m", "lit_seqrl", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"lit-seqrl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


# ---------------------------------------------------------------- D4RL-style files
def flat(n: int = 23, obs_dim: int = 3, act_dim: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """D4RL-style flat arrays: a terminal at row 4, timeouts at rows 9 and 15, rows 16.. unfinished."""
    rng = np.random.default_rng(seed)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[4], timeouts[[i for i in (9, 15) if i < n]] = True, True
    return {
        "observations": rng.standard_normal((n, obs_dim)),
        "next_observations": rng.standard_normal((n, obs_dim)),
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def write_hdf5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.create_group("infos").create_dataset("qpos", data=np.zeros((3, 2)))  # ignored, as in D4RL
    return path


# ---- GPU tests of an official kernel against our PyTorch path ----
KERNEL_DTYPES = ("float32", "bfloat16")
# The official kernels' own test tolerances (mamba_ssm's tests), per input dtype.
KERNEL_TOL = {"float32": {"rtol": 6e-4, "atol": 2e-3}, "bfloat16": {"rtol": 3e-2, "atol": 5e-2}}


def require_kernel(package: str, module: str, what: str) -> None:
    """Skip the calling test unless ``package`` is installed and its compiled ``module`` imports."""
    if importlib.util.find_spec(package) is None or probe(module) is None:
        pytest.skip(f"{what} is not importable")


@contextlib.contextmanager
def registered_env(env_id: str, entry_point: Any) -> Iterator[str]:
    """``env_id`` registered with gymnasium for the duration of the block, then removed."""
    gym.register(id=env_id, entry_point=entry_point)
    try:
        yield env_id
    finally:
        del gym.registry[env_id]
