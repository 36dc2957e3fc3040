"""Shared helpers for tests that run the ``lit-seqrl`` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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
