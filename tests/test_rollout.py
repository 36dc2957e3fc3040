"""Vectorised evaluation: fixed episode assignment, per-episode seeds, no short-episode bias."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from lit_seqrl.data.scores import normalized_score, reference_for
from lit_seqrl.evaluation.rollout import run_episodes, summarize


class BangBang:
    """CartPole policy pushing towards the pole's lean, wrongly every 7th step: varied lengths."""

    def reset(self, rows):
        if not hasattr(self, "t") or len(self.t) != len(rows):
            self.t = np.zeros(len(rows), dtype=int)
        self.t[rows] = 0
        self.resets = getattr(self, "resets", 0) + int(rows.sum())

    def act(self, obs):
        a = (obs[:, 2] > 0).astype(np.int64)
        wrong = self.t % 7 == 6
        self.t += 1
        return np.where(wrong, 1 - a, a)

    def observe(self, rewards):
        pass


def _serial(seed: int) -> float:
    env, policy = gym.make("CartPole-v1"), BangBang()
    obs, _ = env.reset(seed=seed)
    policy.reset(np.ones(1, bool))
    total, done = 0.0, False
    while not done:
        obs, r, term, trunc, _ = env.step(int(policy.act(obs[None])[0]))
        total, done = total + r, term or trunc
    return total


def test_vectorised_episodes_equal_serial_ones_with_the_same_seeds():
    results = run_episodes("CartPole-v1", BangBang(), episodes=7, num_envs=3, seed=100)
    assert [r.index for r in results] == list(range(7))
    assert [r.seed for r in results] == [100 + i for i in range(7)]
    serial = [_serial(100 + i) for i in range(7)]
    assert [r.total_return for r in results] == serial
    assert len(set(serial)) > 1  # the episodes really have different lengths
    assert all(r.length == r.total_return for r in results)  # CartPole: +1 per step


def test_more_envs_than_episodes_and_summary():
    results = run_episodes("CartPole-v1", BangBang(), episodes=2, num_envs=8, seed=0)
    assert len(results) == 2
    stats = summarize(results)
    rets = [r.total_return for r in results]
    assert stats["return_mean"] == pytest.approx(np.mean(rets))
    assert stats["return_std"] == pytest.approx(np.std(rets))
    assert stats["success_rate"] is None
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        run_episodes("CartPole-v1", BangBang(), episodes=0)


def test_normalized_score():
    assert normalized_score(50.0, 0.0, 200.0) == pytest.approx(25.0)
    assert normalized_score(1.0, None, 3.0) is None
    lo, hi = reference_for("Hopper-v5")
    assert normalized_score(3234.3, lo, hi) == pytest.approx(100.0)
    assert reference_for("Pendulum-v1") is None
