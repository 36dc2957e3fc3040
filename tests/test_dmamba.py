"""Decision Mamba (and DS4) fit on the default dataset and evaluate in both modes."""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, TINY, run_cli


@pytest.mark.parametrize("config", ["dmamba_pendulum.yaml", "ds4_pendulum.yaml"])
def test_fit_then_evaluate_window_and_recurrent(config, tmp_path):
    run_cli(
        "fit", "--config", str(REPO / "configs" / config), *TINY,
        "--data.context_len=8", "--data.start_at_episode_start=true",
        "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    (ckpt,) = tmp_path.rglob("last.ckpt")
    for mode in ("window", "recurrent"):
        proc = run_cli(
            "evaluate", "--ckpt_path", str(ckpt), "--episodes", "2", "--num_envs", "2", "--mode", mode
        )
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        assert report["mode"] == mode
        assert all(r["length_mean"] == 200 for r in report["results"])
