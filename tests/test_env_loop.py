"""One policy protocol and one success rule for every environment loop (collection, evaluation,
online Q-learning)."""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest

from lit_seqrl.data.collect import rollout_policy
from lit_seqrl.data.env_loop import FunctionPolicy, episode_success, success_rate
from lit_seqrl.data.online import EnvCollector
from lit_seqrl.data.replay import EpisodicReplay
from lit_seqrl.evaluation.rollout import run_episodes, summarize
from tests.helpers import registered_env


class NoFlagEnv(gym.Env):
    """One-step episodes paying +1 and reporting no success flag in ``info``."""

    observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, dtype=np.float32), 1.0, True, False, {}


@pytest.fixture
def no_flag_env() -> Iterator[str]:
    with registered_env("lit_seqrl_test/NoFlag-v0", NoFlagEnv) as env_id:
        yield env_id


def test_success_is_the_envs_own_flag_or_unknown() -> None:
    assert episode_success({"is_success": True}) is True
    assert episode_success({"success": np.bool_(False)}) is False
    assert episode_success({}) is None
    # A vector env's infos: (M,) arrays plus a mask of the rows that reported the key.
    infos = {"is_success": np.array([True, False, False]), "_is_success": np.array([True, True, False])}
    assert [episode_success(infos, row) for row in range(3)] == [True, False, None]
    assert success_rate([True, None, False, None]) == 0.5
    assert success_rate([None, None]) is None


def test_training_and_evaluation_agree_on_an_env_without_a_flag(no_flag_env: str) -> None:
    """``train/success_rate`` (the online collector) and ``eval/success_rate`` (run_episodes) use
    one rule: an env that reports no success has no success rate, whatever its return."""
    always_0 = FunctionPolicy(lambda obs: 0)
    collector = EnvCollector(lambda: gym.make(no_flag_env), 2, EpisodicReplay(100, obs_dim=2), seed=0)
    for _ in range(3):
        collector.step(always_0, epsilon=0.0)
    train = collector.pop_finished()
    assert [s["return"] for s in train] == [1.0] * 6
    assert [s["success"] for s in train] == [None] * 6
    evaluation = summarize(run_episodes(no_flag_env, always_0, episodes=4, num_envs=2))
    assert evaluation["return_mean"] == 1.0
    assert evaluation["success_rate"] is None
    assert success_rate([s["success"] for s in train]) is None


def test_collection_drives_a_vector_policy_over_one_env() -> None:
    """rollout_policy calls the protocol as evaluation does: reset, then act and observe per step."""
    calls: list[str] = []

    class Recorder:
        def reset(self, rows: np.ndarray) -> None:
            calls.append(f"reset{rows.tolist()}")

        def act(self, obs: np.ndarray) -> np.ndarray:
            calls.append(f"act{obs.shape}")
            return np.zeros((1, 1), dtype=np.float32)

        def observe(self, rewards: np.ndarray) -> None:
            calls.append(f"observe{rewards.shape}")

    (episode,) = rollout_policy("Pendulum-v1", Recorder(), 1, seed=0, max_episode_steps=2)
    assert episode.length == 2
    assert calls == ["reset[True]", "act(1, 3)", "observe(1,)", "act(1, 3)", "observe(1,)"]
