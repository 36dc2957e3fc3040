"""T-maze Heaven/Hell, a quick memory check: the two ends swap between heaven and hell every episode.

A smaller, simplified variant of :mod:`lit_seqrl.envs.heaven_hell` (the DTQN paper's domain).

Layout for ``corridor_length=4`` (rows top to bottom)::

    E J E      E: the two ends (heaven or hell, drawn at reset); J: junction
      |
      |        the corridor
      |
      S        start
      P        priest, a dead end off the way to the junction

The agent sees its own cell (one-hot) and, only while standing on the priest's cell, which end is
heaven. Walking to the priest, remembering his answer along the corridor and turning the right way
at the junction is the only way to win more often than a coin flip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from lit_seqrl.envs.base import StepLimitedEnv

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
_MOVES = {UP: (-1, 0), RIGHT: (0, 1), DOWN: (1, 0), LEFT: (0, -1)}


class TMazeEnv(StepLimitedEnv):
    """Heaven/Hell T-maze with actions ``0: up, 1: right, 2: down, 3: left``.

    Observation: ``float32[n_cells + 2]``: one-hot of the agent's cell, then the priest's answer
    (``[1, 0]``: heaven on the left, ``[0, 1]``: on the right), all zeros away from the priest.
    Reward: ``+1`` entering heaven, ``-1`` entering hell (both terminate), ``0`` otherwise; moving
    into a wall leaves the agent where it is. Truncation after ``max_steps`` steps (50).

    Optimal return: ``+1.0`` in ``corridor_length + 3`` steps (7 by default: one step down to the
    priest, ``corridor_length + 1`` up to the junction, one to heaven). The best memoryless policy
    cannot tell the ends apart at the junction and gets ``0.0`` in expectation (success rate 0.5).
    ``info["is_success"]`` is True when an episode ends in heaven.
    """

    def __init__(self, corridor_length: int = 4, max_steps: int = 50) -> None:
        if corridor_length < 1:
            raise ValueError(f"corridor_length must be >= 1, got {corridor_length}")
        self.corridor_length = corridor_length
        super().__init__(max_steps)
        # Cells as (row, col); row 0 is the top bar, the corridor runs down column 1.
        self.left_end, self.junction, self.right_end = (0, 0), (0, 1), (0, 2)
        self.start = (corridor_length, 1)
        self.priest = (corridor_length + 1, 1)
        cells = [self.left_end, self.junction, self.right_end]
        cells += [(r, 1) for r in range(1, corridor_length + 2)]
        self._index = {cell: i for i, cell in enumerate(cells)}
        self.n_cells = len(cells)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self.n_cells + 2,), dtype=np.float32)
        self.action_space = spaces.Discrete(4)
        self._cell = self.start
        self._heaven_left = True
        self._t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.n_cells + 2, dtype=np.float32)
        obs[self._index[self._cell]] = 1.0
        if self._cell == self.priest:
            obs[self.n_cells + (0 if self._heaven_left else 1)] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._heaven_left = bool(self.np_random.integers(2) == 0)
        self._cell = self.start
        self._t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._check_action(action)
        dr, dc = _MOVES[int(action)]
        target = (self._cell[0] + dr, self._cell[1] + dc)
        if target in self._index:
            self._cell = target
        self._t += 1

        reward = 0.0
        terminated = self._cell in (self.left_end, self.right_end)
        if terminated:
            heaven = self.left_end if self._heaven_left else self.right_end
            reward = 1.0 if self._cell == heaven else -1.0
        return self._end_step(self._obs(), reward, terminated, success=reward > 0)
