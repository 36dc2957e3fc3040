"""Episodic replay for history-based Q-learning (DQN / DRQN / DTQN).

Whole episodes are stored, so a sample can be a *history window*: up to ``context_len``
consecutive steps of one episode. Windows are right-padded to the longest one in the batch;
with causal models right padding never influences real positions, so the networks need no
attention mask, and ``mask`` only tells the loss which positions are real.

Capacity is counted in transitions; adding an episode evicts the oldest whole episodes until it
fits, so memory is bounded by ``capacity`` transitions plus one observation per stored episode.
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_seqrl.data.episodes import Episode
from lit_seqrl.errors import ConfigError

ReplayBatch = dict[str, Tensor]


class EpisodicReplay:
    """Bounded FIFO of whole episodes that samples padded history windows.

    Episodes are stored as :class:`~lit_seqrl.data.episodes.Episode` (the offline data's type):
    ``observations (T, D)`` plus ``final_observation``; ``terminated`` is False for truncation by
    a time limit and for chunks cut from a longer episode (both then count as ``truncated``).

    Args:
        capacity: maximum number of stored transitions (the DTQN paper uses 500k).
        obs_dim: observation width ``D``.
        seed: seed of the sampling generator.
    """

    def __init__(self, capacity: int, obs_dim: int, seed: int | None = None) -> None:
        if capacity < 1:
            raise ConfigError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.obs_dim = obs_dim
        self.rng = np.random.default_rng(seed)
        self._episodes: deque[Episode] = deque()
        self._size = 0
        self._added = 0  # episodes ever added: the next one's id
        self._lengths: np.ndarray | None = None  # cached for sampling, dropped on every change

    def __len__(self) -> int:
        """Number of stored transitions."""
        return self._size

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    def add_episode(
        self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminated: bool
    ) -> None:
        """Store an episode: ``obs (T + 1, D)``, ``actions (T,)``, ``rewards (T,)``.

        An episode longer than ``capacity`` keeps only its last ``capacity`` transitions.
        """
        n = len(actions)
        if n == 0:
            return
        if obs.shape != (n + 1, self.obs_dim) or rewards.shape != (n,):
            raise ValueError(
                f"expected obs ({n + 1}, {self.obs_dim}) and rewards ({n},), got {obs.shape} and {rewards.shape}"
            )
        if n > self.capacity:
            n = self.capacity
            obs, actions, rewards = obs[-n - 1 :], actions[-n:], rewards[-n:]
        while self._episodes and self._size + n > self.capacity:
            self._size -= self._episodes.popleft().length
        obs = np.asarray(obs, dtype=np.float32)
        episode = Episode(
            observations=obs[:-1],
            actions=np.asarray(actions, dtype=np.int64),
            rewards=np.asarray(rewards, dtype=np.float32),
            terminated=bool(terminated),
            truncated=not terminated,
            id=self._added,
            final_observation=obs[-1],
        )
        self._episodes.append(episode)
        self._added += 1
        self._size += n
        self._lengths = None

    def state_dict(self) -> dict[str, Any]:
        """Every stored episode and the sampling generator, as tensors and plain Python values
        (what a checkpoint can hold): :meth:`load_state_dict` then samples exactly as this buffer."""
        eps = list(self._episodes)
        D = self.obs_dim
        return {
            "capacity": self.capacity,
            "obs_dim": self.obs_dim,
            "added": self._added,
            "rng": self.rng.bit_generator.state,
            "lengths": torch.tensor([e.length for e in eps], dtype=torch.int64),
            "ids": torch.tensor([e.id for e in eps], dtype=torch.int64),
            "terminated": torch.tensor([e.terminated for e in eps], dtype=torch.bool),
            "observations": _concat([e.observations for e in eps], (0, D), np.float32),
            "final_observations": _concat([e.final_observation[None] for e in eps], (0, D), np.float32),
            "actions": _concat([e.actions for e in eps], (0,), np.int64),
            "rewards": _concat([e.rewards for e in eps], (0,), np.float32),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with those of :meth:`state_dict` (same observation width; the
        episodes are kept up to this buffer's capacity, the newest first)."""
        if state["obs_dim"] != self.obs_dim:
            raise ConfigError(
                f"saved replay has observations of width {state['obs_dim']}, this buffer {self.obs_dim}"
            )
        lengths = state["lengths"].tolist()
        ends = np.cumsum([0, *lengths])
        obs, acts, rews = (state[k].numpy() for k in ("observations", "actions", "rewards"))
        self._episodes.clear()
        self._size = 0
        for i, (a, b) in enumerate(pairwise(ends)):
            episode_obs = np.concatenate([obs[a:b], state["final_observations"][i, None].numpy()])
            self._added = int(state["ids"][i])
            self.add_episode(episode_obs, acts[a:b], rews[a:b], bool(state["terminated"][i]))
        self._added = int(state["added"])
        self.rng.bit_generator.state = state["rng"]

    def sample(self, batch_size: int, context_len: int, pad_to_context: bool = False) -> ReplayBatch:
        """Sample ``batch_size`` history windows of at most ``context_len`` steps.

        Episodes are drawn with probability proportional to their length and the window start
        uniformly among the starts that fit, so a window covers ``min(context_len, T)`` steps.

        Returns:
            dict of tensors, ``L = context_len`` if ``pad_to_context`` else the longest window:
            ``obs (B, L, D)``, ``next_obs (B, L, D)`` (``next_obs[:, t] = obs[:, t + 1]`` within the
            episode), ``actions (B, L)`` int64, ``rewards (B, L)``, ``dones (B, L)`` (1.0 where the
            episode terminated at that step), ``mask (B, L)`` bool (True for real steps, padding
            on the right).
        """
        if not self._episodes:
            raise RuntimeError("cannot sample from an empty replay buffer")
        if self._lengths is None:
            self._lengths = np.array([e.length for e in self._episodes], dtype=np.float64)
        picks = self.rng.choice(len(self._lengths), size=batch_size, p=self._lengths / self._lengths.sum())
        windows = []
        for i in picks:
            ep = self._episodes[i]
            T = ep.length
            n = min(context_len, T)
            start = int(self.rng.integers(0, T - n + 1))
            windows.append((ep, start, n))
        L = context_len if pad_to_context else max(n for _, _, n in windows)

        obs = np.zeros((batch_size, L, self.obs_dim), dtype=np.float32)
        next_obs = np.zeros_like(obs)
        actions = np.zeros((batch_size, L), dtype=np.int64)
        rewards = np.zeros((batch_size, L), dtype=np.float32)
        dones = np.zeros((batch_size, L), dtype=np.float32)
        mask = np.zeros((batch_size, L), dtype=bool)
        for b, (ep, start, n) in enumerate(windows):
            obs[b, :n] = ep.observations[start : start + n]
            # next_obs[:, t] = obs[:, t + 1]; past the last step, the final observation.
            T = ep.length
            inside = min(n, T - 1 - start)  # steps whose next observation is in ``observations``
            next_obs[b, :inside] = ep.observations[start + 1 : start + 1 + inside]
            if inside < n:
                next_obs[b, n - 1] = ep.final_observation
            actions[b, :n] = ep.actions[start : start + n]
            rewards[b, :n] = ep.rewards[start : start + n]
            mask[b, :n] = True
            if ep.terminated and start + n == T:
                dones[b, n - 1] = 1.0
        return {
            "obs": torch.from_numpy(obs),
            "next_obs": torch.from_numpy(next_obs),
            "actions": torch.from_numpy(actions),
            "rewards": torch.from_numpy(rewards),
            "dones": torch.from_numpy(dones),
            "mask": torch.from_numpy(mask),
        }


def _concat(arrays: list[np.ndarray], empty_shape: tuple[int, ...], dtype: type) -> Tensor:
    return torch.from_numpy(np.concatenate(arrays) if arrays else np.zeros(empty_shape, dtype=dtype))


class EpisodeRecorder:
    """Collects the steps of ``num_envs`` parallel environments and stores finished episodes.

    An episode still running after ``max_chunk`` steps is stored as a non-terminated chunk and
    continues in a new one, so staging memory stays bounded even without a time limit
    (histories then restart at the chunk boundary).
    """

    def __init__(self, buffer: EpisodicReplay, num_envs: int, max_chunk: int = 10_000) -> None:
        self.buffer = buffer
        self.max_chunk = max_chunk
        self._obs: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
        self._actions: list[list[int]] = [[] for _ in range(num_envs)]
        self._rewards: list[list[float]] = [[] for _ in range(num_envs)]

    def begin(self, env: int, obs: np.ndarray) -> None:
        """Start a new episode in slot ``env`` with its first observation (drops any unfinished one)."""
        self._obs[env] = [np.asarray(obs, dtype=np.float32)]
        self._actions[env] = []
        self._rewards[env] = []

    def record(
        self, env: int, action: int, reward: float, next_obs: np.ndarray, terminated: bool, truncated: bool
    ) -> None:
        """Append one step; on ``terminated or truncated`` the episode goes to the buffer."""
        if not self._obs[env]:
            raise RuntimeError(f"record() before begin() for env {env}")
        self._obs[env].append(np.asarray(next_obs, dtype=np.float32))
        self._actions[env].append(int(action))
        self._rewards[env].append(float(reward))
        if terminated or truncated:
            self._flush(env, terminated)
            self._obs[env] = []
        elif len(self._actions[env]) >= self.max_chunk:
            self._flush(env, False)
            self.begin(env, next_obs)

    def _flush(self, env: int, terminated: bool) -> None:
        self.buffer.add_episode(
            np.stack(self._obs[env]),
            np.asarray(self._actions[env], dtype=np.int64),
            np.asarray(self._rewards[env], dtype=np.float32),
            terminated,
        )
