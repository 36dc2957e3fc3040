"""Heaven/Hell as the DTQN paper ran it: gym-pomdps' ``heavenhell_3`` written from its specification.

Two copies of one map, one per world (heaven on the left or on the right)::

    6 5 4 3 7 8 9        3: junction; 4-6 and 7-9: the two arms, 6 and 9 their ends
          2
          1
          0              0: start
         10 11 12 13     13: the priest, at the end of a side path

Moves go to the neighbouring cell in that direction if there is one, otherwise the agent stays.
At an arm's end (6 or 9) *any* action ends the episode, with ``+1`` if that end is heaven and
``-1`` if it is hell ("stepping off the end"). The observation names the cell (13 labels, the same
in both worlds), except on the priest's cell, where it is ``left`` or ``right``: where heaven is.
The start is cell 0 of either world with probability 1/2 each.

The shortest sure win takes 15 actions: down, 3 x east to the priest, 3 x west, 4 x north to the
junction, 3 x along the heaven arm, and one action off its end. A memoryless policy cannot tell
the worlds apart at the junction and wins half of the time at best.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

from lit_seqrl.envs.base import StepLimitedEnv

NORTH, SOUTH, EAST, WEST = 0, 1, 2, 3  # the action order of the specification (N S E W)
_MOVES = {NORTH: (-1, 0), SOUTH: (1, 0), EAST: (0, 1), WEST: (0, -1)}


def heaven_hell_cells(n: int = 3) -> dict[tuple[int, int], int]:
    """The map: ``(row, col) -> cell label``, labels as in the module docstring for ``n = 3``.

    ``n`` is the length of each arm, of the corridor below the junction and of the priest's path.
    """
    j = n  # column of the corridor
    cells = {(0, j): n}  # junction
    for i in range(n):
        cells[(n - i, j)] = i  # corridor: start 0 at the bottom ... n - 1 below the junction
        cells[(0, j - 1 - i)] = n + 1 + i  # left arm, its end last
        cells[(0, j + 1 + i)] = 2 * n + 1 + i  # right arm, its end last
    cells[(n + 1, j)] = 3 * n + 1  # below the start
    for i in range(n):
        cells[(n + 1, j + 1 + i)] = 3 * n + 2 + i  # the priest's path, the priest last
    return cells


class HeavenHellEnv(StepLimitedEnv):
    """gym-pomdps' ``heavenhell_3`` with actions ``0: N, 1: S, 2: E, 3: W``.

    Observation: ``Discrete(3 n + 4 + 2)`` (15 for ``n = 3``): the label of the cell for every
    cell but the priest's, then ``left`` / ``right`` on the priest's cell.
    Reward: ``+1`` / ``-1`` for the action taken at heaven's / hell's arm end, which terminates;
    ``0`` otherwise. Truncation after ``max_steps`` steps (100; the specification has no limit).
    ``info["is_success"]`` is True when an episode ends in heaven.

    Args:
        n: arm, corridor and priest-path length (3 in ``heavenhell_3``).
        max_steps: step limit.
    """

    def __init__(self, n: int = 3, max_steps: int = 100) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        super().__init__(max_steps)
        self.cells = heaven_hell_cells(n)
        self.priest = next(c for c, k in self.cells.items() if k == 4 * n + 1)
        self.start = next(c for c, k in self.cells.items() if k == 0)
        self.left_end = next(c for c, k in self.cells.items() if k == 2 * n)
        self.right_end = next(c for c, k in self.cells.items() if k == 3 * n)
        self.n_labels = 4 * n + 1  # every cell but the priest's
        self.observation_space = spaces.Discrete(self.n_labels + 2)
        self.action_space = spaces.Discrete(4)
        self._cell = self.start
        self._heaven_left = True
        self._t = 0

    @property
    def cell(self) -> tuple[int, int]:
        """The agent's ``(row, col)`` (hidden from the agent)."""
        return self._cell

    @property
    def heaven_left(self) -> bool:
        """Whether heaven is at the left arm's end this episode (hidden from the agent)."""
        return self._heaven_left

    def _obs(self) -> int:
        if self._cell == self.priest:
            return self.n_labels + (0 if self._heaven_left else 1)
        return self.cells[self._cell]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self._heaven_left = bool(self.np_random.integers(2) == 0)
        self._cell = self.start
        self._t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        self._check_action(action)
        self._t += 1
        reward, terminated = 0.0, False
        if self._cell in (self.left_end, self.right_end):
            terminated = True
            heaven = self.left_end if self._heaven_left else self.right_end
            reward = 1.0 if self._cell == heaven else -1.0
        else:
            dr, dc = _MOVES[int(action)]
            target = (self._cell[0] + dr, self._cell[1] + dc)
            if target in self.cells:
                self._cell = target
        return self._end_step(self._obs(), reward, terminated, success=reward > 0)
