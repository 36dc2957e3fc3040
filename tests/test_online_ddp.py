"""Online Q-learning (DQN/DRQN/DTQN) under DDP on CPU: own envs, seed and replay per rank, shared weights."""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, run_cli


@pytest.mark.slow  # about 40 s: two processes each building envs and a network
def test_online_agent_two_cpu_processes(tmp_path):
    probe = tmp_path / "probe"
    run_cli(
        "fit", "--config", str(REPO / "configs" / "dtqn_carflag.yaml"),
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
        "--trainer.max_steps=6", "--trainer.enable_progress_bar=false",
        "--model.backbone.d_model=16", "--model.backbone.n_layers=1", "--model.d_model=16",
        "--model.context_len=8", "--model.batch_size=8", "--model.learning_starts=40",
        "--model.batches_per_epoch=3", "--model.eval_episodes=0", "--model.seed=7",
        "--trainer.callbacks+=tests.probes.OnlineRecorder", f"--trainer.callbacks.out_dir={probe}",
        f"--trainer.default_root_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    ranks = [json.loads((probe / f"online{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["global_step"] for r in ranks] == [6, 6]
    # Each rank stepped its own environments from its own seed into its own replay buffer ...
    assert ranks[0]["seed"] != ranks[1]["seed"]
    assert all(r["env_steps"] > 0 and r["replay_size"] > 0 for r in ranks)
    assert ranks[0]["replay"] != ranks[1]["replay"], "both ranks collected the same experience"
    # ... yet, trained on different batches, they end with the same weights: gradients were averaged.
    assert ranks[0]["weights"] == ranks[1]["weights"], "the ranks' networks diverged"
