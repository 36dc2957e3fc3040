"""Littman's stochastic Hallway (Littman, Cassandra & Kaelbling, 1995), written from its specification.

Fifteen cells: a corridor of eleven and four alcoves below its 3rd, 5th, 7th and 9th cells; the
goal is the last alcove. With four headings that is 60 states::

    c0 c1 c2 c3 c4 c5 c6 c7 c8 c9 c10
          a0    a1    a2    G

Actions: ``0: stay, 1: forward, 2: turn right, 3: turn left, 4: turn around``. Every action but
*stay* does what it says with probability 0.8; otherwise one of the four other actions happens
instead (0.05 each). Moving forward into a wall leaves the agent where it is.

Observations are noisy wall sensors: for each side (front, right, back, left) a wall is reported
with probability 0.9 where there is one and 0.05 where there is none, giving 16 patterns. Facing
south inside a non-goal alcove shows that alcove's landmark instead (3 observations), and the goal
its own observation: 20 in all, one-hot. Reward ``+1`` on arriving at the goal, which ends the
episode; the start is a uniformly random non-goal state; truncation after ``max_steps`` (100).
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

from lit_seqrl.envs.base import StepLimitedEnv

STAY, FORWARD, TURN_RIGHT, TURN_LEFT, TURN_AROUND = range(5)
UP, RIGHT, DOWN, LEFT = range(4)  # headings, clockwise
_STEP = {UP: (-1, 0), RIGHT: (0, 1), DOWN: (1, 0), LEFT: (0, -1)}
CORRIDOR = 11
ALCOVE_COLUMNS = (2, 4, 6, 8)  # the last one holds the goal


class HallwayEnv(StepLimitedEnv):
    """The 60-state Hallway POMDP; ``info["is_success"]`` is True when the goal is reached.

    Args:
        max_steps: step limit.
        p_action: probability that a non-stay action does what it says.
        p_wall_hit: probability of reporting a wall that is there.
        p_wall_false: probability of reporting a wall that is not there.
    """

    n_wall_patterns = 16
    n_landmarks = len(ALCOVE_COLUMNS) - 1

    def __init__(
        self,
        max_steps: int = 100,
        p_action: float = 0.8,
        p_wall_hit: float = 0.9,
        p_wall_false: float = 0.05,
    ) -> None:
        super().__init__(max_steps)
        for name, p in (("p_action", p_action), ("p_wall_hit", p_wall_hit), ("p_wall_false", p_wall_false)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.p_action, self.p_wall_hit, self.p_wall_false = p_action, p_wall_hit, p_wall_false
        self.cells = [(0, c) for c in range(CORRIDOR)] + [(1, c) for c in ALCOVE_COLUMNS]
        self._cell_set = set(self.cells)
        self.goal = (1, ALCOVE_COLUMNS[-1])
        self.landmarks = {(1, c): i for i, c in enumerate(ALCOVE_COLUMNS[:-1])}
        self.n_obs = self.n_wall_patterns + self.n_landmarks + 1
        self.observation_space = spaces.Discrete(self.n_obs)
        self.action_space = spaces.Discrete(5)
        self.starts = [(cell, h) for cell in self.cells if cell != self.goal for h in range(4)]
        self._cell, self._heading, self._t = self.cells[0], UP, 0

    @property
    def state(self) -> tuple[tuple[int, int], int]:
        """``((row, col), heading)`` (hidden from the agent)."""
        return self._cell, self._heading

    def walls(self, cell: tuple[int, int], heading: int) -> tuple[bool, bool, bool, bool]:
        """True where there is a wall in front, right, behind and left of ``heading`` at ``cell``."""
        out = []
        for turn in range(4):  # front, right, back, left = heading + 0, 1, 2, 3 clockwise
            dr, dc = _STEP[(heading + turn) % 4]
            out.append((cell[0] + dr, cell[1] + dc) not in self._cell_set)
        return tuple(out)  # type: ignore[return-value]

    def _obs(self) -> int:
        if self._cell == self.goal:
            return self.n_obs - 1
        if self._heading == DOWN and self._cell in self.landmarks:
            return self.n_wall_patterns + self.landmarks[self._cell]
        seen = 0
        for bit, wall in enumerate(self.walls(self._cell, self._heading)):
            p = self.p_wall_hit if wall else self.p_wall_false
            seen |= int(self.np_random.random() < p) << bit
        return seen

    def _apply(self, action: int) -> None:
        if action == FORWARD:
            dr, dc = _STEP[self._heading]
            target = (self._cell[0] + dr, self._cell[1] + dc)
            if target in self._cell_set:
                self._cell = target
        elif action == TURN_RIGHT:
            self._heading = (self._heading + 1) % 4
        elif action == TURN_LEFT:
            self._heading = (self._heading - 1) % 4
        elif action == TURN_AROUND:
            self._heading = (self._heading + 2) % 4

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self._cell, self._heading = self.starts[int(self.np_random.integers(len(self.starts)))]
        self._t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        self._check_action(action)
        action = int(action)
        if action != STAY and self.np_random.random() >= self.p_action:
            others = [a for a in range(5) if a != action]
            action = others[int(self.np_random.integers(len(others)))]
        self._apply(action)
        self._t += 1
        terminated = self._cell == self.goal
        reward = 1.0 if terminated else 0.0
        return self._end_step(self._obs(), reward, terminated, success=terminated)
