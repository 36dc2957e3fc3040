"""Online experience for Q-learning agents: step environments with an actor, feed the replay.

This module knows environments and replay but no networks: acting goes through
:class:`~lit_seqrl.data.env_loop.VectorPolicy` (the protocol evaluation and collection drive,
too), which an agent implements on top of a backbone's ``step``. The environments are a plain list stepped one after
another, which keeps the episode boundary explicit: no autoreset, a finished environment is
reset here and the actor is told which rows start over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gymnasium as gym
import numpy as np
from torch.utils.data import IterableDataset

from lit_seqrl.data.env_loop import VectorPolicy, episode_success
from lit_seqrl.data.replay import EpisodeRecorder, EpisodicReplay, ReplayBatch
from lit_seqrl.errors import ConfigError, ConfigTypeError

EnvFactory = Callable[[], gym.Env]


def flat_obs_dim(env: gym.Env) -> int:
    """Width of the flat float observation used by our agents (one-hot for discrete parts)."""
    return int(gym.spaces.flatdim(env.observation_space))


def _flatten(env: gym.Env, obs: object) -> np.ndarray:
    return np.asarray(gym.spaces.flatten(env.observation_space, obs), dtype=np.float32)


def _as_float(flag: bool | None) -> float | None:
    return None if flag is None else float(flag)


class EnvCollector:
    """``num_envs`` environments stepped together, writing every transition to ``buffer``.

    Each environment ``i`` is reset with ``seed + i`` once and then continues its own random
    stream, so a run is reproducible from ``seed``.
    """

    def __init__(self, env_fn: EnvFactory, num_envs: int, buffer: EpisodicReplay, seed: int = 0) -> None:
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        self.envs = [env_fn() for _ in range(num_envs)]
        for env in self.envs:
            if not isinstance(env.action_space, gym.spaces.Discrete):
                raise ConfigTypeError(f"Q-learning needs a Discrete action space, got {env.action_space}")
        self.buffer = buffer
        self.recorder = EpisodeRecorder(buffer, num_envs)
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.n_actions = int(self.envs[0].action_space.n)
        self.env_steps = 0
        self.finished: list[dict[str, float | None]] = []  # episode stats not yet consumed by the logger
        self._obs: np.ndarray | None = None
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def _start(self, actor: VectorPolicy) -> None:
        obs = []
        for i, env in enumerate(self.envs):
            o, _ = env.reset(seed=self.seed + i)
            flat = _flatten(env, o)
            self.recorder.begin(i, flat)
            obs.append(flat)
        self._obs = np.stack(obs)
        actor.reset(np.ones(self.num_envs, dtype=bool))

    def step(self, actor: VectorPolicy, epsilon: float) -> None:
        """Advance every environment by one step with an epsilon-greedy version of ``actor``.

        ``actor.act`` gives greedy actions ``(N,)`` for the observations ``(N, D)`` float32; it
        observes the step's rewards, then the rows whose episode ended are reset.
        """
        if self._obs is None:
            self._start(actor)
        assert self._obs is not None
        actions = np.asarray(actor.act(self._obs), dtype=np.int64)
        explore = self.rng.random(self.num_envs) < epsilon
        actions = np.where(explore, self.rng.integers(self.n_actions, size=self.num_envs), actions)
        done_rows = np.zeros(self.num_envs, dtype=bool)
        rewards = np.zeros(self.num_envs)
        for i, env in enumerate(self.envs):
            o, r, terminated, truncated, info = env.step(int(actions[i]))
            o = _flatten(env, o)
            self.recorder.record(i, int(actions[i]), float(r), o, terminated, truncated)
            self._returns[i] += r
            rewards[i] = r
            self._lengths[i] += 1
            if terminated or truncated:
                self.finished.append(
                    {
                        "return": float(self._returns[i]),
                        "length": float(self._lengths[i]),
                        "success": _as_float(episode_success(info)),
                    }
                )
                self._returns[i], self._lengths[i] = 0.0, 0
                o, _ = env.reset()
                o = _flatten(env, o)
                self.recorder.begin(i, o)
                done_rows[i] = True
            self._obs[i] = o
        self.env_steps += self.num_envs
        actor.observe(rewards)
        if done_rows.any():
            actor.reset(done_rows)

    def pop_finished(self) -> list[dict[str, float | None]]:
        """Stats of the episodes finished since the last call: return, length, and success
        (:func:`~lit_seqrl.data.env_loop.episode_success`: None where the env reports none)."""
        out, self.finished = self.finished, []
        return out

    def close(self) -> None:
        for env in self.envs:
            env.close()


class ReplayStream(IterableDataset):
    """Training batches from online experience: step the environments, then sample the replay.

    Each epoch yields ``batches_per_epoch`` batches. Before every batch the collector makes
    ``env_steps_per_batch`` steps with epsilon ``epsilon_fn()``; first, random steps fill the
    buffer up to ``learning_starts`` transitions. Use with ``DataLoader(..., batch_size=None)``
    in the main process (the collector and actor live there).
    """

    def __init__(
        self,
        collector: EnvCollector,
        actor: VectorPolicy,
        batch_size: int,
        context_len: int,
        batches_per_epoch: int,
        env_steps_per_batch: int = 1,
        learning_starts: int = 0,
        epsilon_fn: Callable[[], float] = lambda: 0.0,
    ) -> None:
        super().__init__()
        self.collector = collector
        self.actor = actor
        self.batch_size = batch_size
        self.context_len = context_len
        self.batches_per_epoch = batches_per_epoch
        self.env_steps_per_batch = env_steps_per_batch
        self.learning_starts = max(learning_starts, 1)
        self.epsilon_fn = epsilon_fn

    def __iter__(self) -> Iterator[ReplayBatch]:
        buffer = self.collector.buffer
        for _ in range(self.batches_per_epoch):
            while len(buffer) < self.learning_starts or buffer.num_episodes == 0:
                self.collector.step(self.actor, 1.0)
            for _ in range(self.env_steps_per_batch):
                self.collector.step(self.actor, self.epsilon_fn())
            yield buffer.sample(self.batch_size, self.context_len)
