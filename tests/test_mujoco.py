"""MuJoCo Hopper-v5 for real: a generated dataset, a short ``fit`` that evaluates on vector envs,
and ``evaluate`` reporting a D4RL-normalised score."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from tests.helpers import REPO, SHARED_DATA, run_cli

pytest.importorskip("mujoco")

from lit_seqrl.data.collect import rollout_policy
from lit_seqrl.data.episodes import load_offline_dataset
from lit_seqrl.data.store import write_dataset

# D4RL's published hopper reference returns (random, expert), written out here on purpose.
HOPPER_RANDOM, HOPPER_EXPERT = -20.272305, 3234.3
DATASET = "test/hopper/scripted-v0"


def _stand_still(obs: np.ndarray) -> np.ndarray:
    """A tiny scripted policy: push each joint back towards 0 (falls over within 30-400 steps)."""
    return np.clip(-2.0 * obs[2:5], -1.0, 1.0)


@pytest.fixture(scope="module")
def hopper_dataset() -> str:
    episodes = rollout_policy("Hopper-v5", _stand_still, 12, seed=0, action_noise=0.3)
    write_dataset(
        DATASET,
        episodes,
        "Hopper-v5",
        ref_min_score=HOPPER_RANDOM,
        ref_max_score=HOPPER_EXPERT,
        overwrite=True,
    )
    return DATASET


def test_generated_hopper_dataset_reads_back_as_written(hopper_dataset):
    data = load_offline_dataset(hopper_dataset)
    assert data.env_id == "Hopper-v5" and len(data.episodes) == 12
    assert (data.obs_dim, data.act_dim, data.discrete) == (11, 3, False)
    assert (data.ref_min_score, data.ref_max_score) == (HOPPER_RANDOM, HOPPER_EXPERT)
    for ep in data.episodes:
        assert ep.observations.shape == (ep.length, 11) and ep.actions.shape == (ep.length, 3)
        assert np.all(np.abs(ep.actions) <= 1.0)
        assert ep.terminated != ep.truncated  # Hopper ends by falling or at the 1000-step limit
        assert 0 < ep.length <= 1000


@pytest.fixture(scope="module")
def hopper_checkpoint(hopper_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("hopper_fit")
    run_cli(
        "fit", "--config", str(REPO / "configs" / "dt_hopper_medium.yaml"), f"--data.dataset={hopper_dataset}",
        "--trainer.max_steps=4", "--trainer.val_check_interval=4", "--trainer.limit_val_batches=1",
        "--data.batch_size=8", "--data.windows_per_epoch=64", "--data.val_windows=8",
        "--model.backbone.d_model=32", "--model.backbone.n_layers=1",
        "--model.eval_episodes=3", "--model.eval_num_envs=3",
        f"--trainer.default_root_dir={root}", cwd=root,
    )  # fmt: skip
    (events,) = root.rglob("events.out.tfevents.*")
    (ckpt,) = root.rglob("last.ckpt")
    return events, ckpt


def test_fit_on_hopper_logs_a_d4rl_normalised_eval_score(hopper_checkpoint):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events, _ = hopper_checkpoint
    acc = EventAccumulator(str(events))
    acc.Reload()
    (ret,) = acc.Scalars("eval/return")
    (score,) = acc.Scalars("eval/normalized_score")
    assert ret.step == score.step  # one evaluation, logged once
    expected = 100.0 * (ret.value - HOPPER_RANDOM) / (HOPPER_EXPERT - HOPPER_RANDOM)
    assert score.value == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_evaluate_reports_the_d4rl_normalised_score(hopper_checkpoint):
    _, ckpt = hopper_checkpoint
    proc = run_cli(
        "evaluate",
        "--ckpt_path",
        str(ckpt),
        "--episodes",
        "3",
        "--num_envs",
        "3",
        "--target_return",
        "3600",
        "1800",
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["env_id"] == "Hopper-v5" and report["episodes"] == 3
    assert [r["target_return"] for r in report["results"]] == [3600.0, 1800.0]
    for row in report["results"]:
        # An untrained agent falls over: alive bonus 1 per step, so the return is of the order of the length.
        assert 0 < row["length_mean"] <= 1000 and -100 < row["return_mean"] < 3 * row["length_mean"]
        by_hand = 100.0 * (row["return_mean"] - HOPPER_RANDOM) / (HOPPER_EXPERT - HOPPER_RANDOM)
        assert row["normalized_score"] == pytest.approx(by_hand, rel=1e-9)


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not (SHARED_DATA / "cs285_experts" / "Hopper.pkl").is_file(), reason="expert policies absent"
)
def test_expert_mlp_mean_action_hops_to_an_expert_return():
    # The shared data's README measures about 3720 for the Hopper expert's mean action.
    mujoco_data = _load_script("mujoco_data")
    expert = mujoco_data.ExpertMLP(SHARED_DATA / "cs285_experts" / "Hopper.pkl")
    (ep,) = rollout_policy("Hopper-v5", expert, 1, seed=123)
    assert ep.length == 1000 and ep.total_return > 3500
