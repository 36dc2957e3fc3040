"""Counting hallway, a quick memory check: find an unmarked door in a corridor of look-alike cells.

A deterministic, simplified relative of :mod:`lit_seqrl.envs.hallway` (Littman's 60-state hallway).

A corridor of ``length`` cells; the door is at cell ``goal``. The agent starts on a random cell other
than the door and sees only whether it is at the left end, at the right end or somewhere in between
(every inner cell, the door included, gives the same observation), plus the action it took last.
To open the door it must localise itself (walk to an end) and count its steps from there: a
counting memory task with heavily aliased observations, in the spirit of the classic Hallway
POMDPs (Littman, Cassandra & Kaelbling, 1995) without their stochastic dynamics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from lit_seqrl.envs.base import StepLimitedEnv

LEFT, RIGHT, OPEN = 0, 1, 2


class CountingHallwayEnv(StepLimitedEnv):
    """Aliased 1-D hallway with actions ``0: left, 1: right, 2: open the door here``.

    Observation: ``float32[6]``: one-hot of ``(at left end, at right end, inside)`` followed by
    a one-hot of the previous action (``left, right, open``; all zero right after reset).
    Reward: ``+1`` for opening at the door, ``-1`` for opening anywhere else (both terminate),
    ``0`` for moving; walking into an end wall leaves the agent in place.
    Truncation after ``max_steps`` steps (default ``4 * length``).

    Optimal return: ``+1.0`` in every episode; the shortest sure way walks to the nearer end it can
    identify and counts, so it needs up to about ``2 * length`` steps. A memoryless policy sees the
    door cell exactly like every other inner cell and cannot do better than guessing.
    ``info["is_success"]`` is True when the door is opened.
    """

    def __init__(self, length: int = 8, goal: int | None = None, max_steps: int | None = None) -> None:
        if length < 4:
            raise ValueError(f"length must be >= 4, got {length}")
        goal = length // 2 + 1 if goal is None else goal
        if not 0 < goal < length - 1:
            raise ValueError(f"goal must be an inner cell (0 < goal < {length - 1}), got {goal}")
        self.length = length
        self.goal = goal
        super().__init__(4 * length if max_steps is None else max_steps)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(6,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self._pos = 0
        self._last_action: int | None = None
        self._t = 0

    @property
    def position(self) -> int:
        """The agent's cell (hidden from the agent)."""
        return self._pos

    def _obs(self) -> np.ndarray:
        obs = np.zeros(6, dtype=np.float32)
        place = 0 if self._pos == 0 else 1 if self._pos == self.length - 1 else 2
        obs[place] = 1.0
        if self._last_action is not None:
            obs[3 + self._last_action] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        starts = [c for c in range(self.length) if c != self.goal]
        self._pos = int(self.np_random.choice(starts))
        self._last_action = None
        self._t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._check_action(action)
        action = int(action)
        reward, terminated = 0.0, False
        if action == OPEN:
            terminated = True
            reward = 1.0 if self._pos == self.goal else -1.0
        else:
            step = -1 if action == LEFT else 1
            self._pos = min(max(self._pos + step, 0), self.length - 1)
        self._last_action = action
        self._t += 1
        return self._end_step(self._obs(), reward, terminated, success=reward > 0)
