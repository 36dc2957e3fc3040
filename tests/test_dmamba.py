"""Decision Mamba (and DS4) fit on the default dataset and evaluate in both modes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lit_seqrl.agents import load_agent
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.evaluation.rollout import run_episodes
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
    agent = load_agent(str(ckpt))
    for mode in ("window", "recurrent"):
        proc = run_cli(
            "evaluate", "--ckpt_path", str(ckpt), "--episodes", "2", "--num_envs", "2", "--mode", mode,
            "--target_return", "-150",
        )  # fmt: skip
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        assert report["mode"] == mode
        # The same episodes as this checkpoint's policy in that mode, rolled out here.
        episodes = run_episodes("Pendulum-v1", DecisionPolicy(agent, -150.0, mode), 2, num_envs=2, seed=0)
        expected = np.mean([e.total_return for e in episodes])
        assert report["results"][0]["return_mean"] == pytest.approx(expected, rel=1e-5)
