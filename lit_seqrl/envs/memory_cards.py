"""Memory Cards: find the partner of the card shown, remembering the cards seen before.

``n_pairs`` pairs of cards lie face down in a row. Each step one card still on the table is shown
face up; the agent names the position of its partner. A correct guess removes both cards; a wrong
guess (or naming the shown card itself, or a removed card) costs ``-1`` and the shown card is turned
face down again. The episode ends when the table is empty or after ``max_steps`` steps. The DTQN
paper's Memory Cards domain (Esslinger et al., 2022) uses 5 pairs and 50 steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from lit_seqrl.envs.base import StepLimitedEnv


class MemoryCardsEnv(StepLimitedEnv):
    """Memory Cards with ``2 * n_pairs`` positions; action ``i`` names position ``i``.

    Observation: ``int64[2 * n_pairs]`` (MultiDiscrete), per position ``0`` face down,
    ``1..n_pairs`` the face of the card shown this step, ``n_pairs + 1`` removed.
    Reward: ``0`` for a correct guess, ``-1`` for a wrong one. Termination: all pairs removed.
    Truncation: ``max_steps`` steps (50).

    Optimal return: at most ``0`` (no mistakes). Mistakes are unavoidable when the shown card's
    partner has never been shown; a policy with perfect memory (name the partner if seen, else a
    never-seen card) averages about ``-5.6`` with 5 pairs and always clears the table within 50
    steps (at most about 21). ``info["is_success"]`` is True when the table is cleared.
    """

    def __init__(self, n_pairs: int = 5, max_steps: int = 50) -> None:
        if n_pairs < 2:
            raise ValueError(f"n_pairs must be >= 2, got {n_pairs}")
        self.n_pairs = n_pairs
        self.n_cards = 2 * n_pairs
        super().__init__(max_steps)
        self.hidden, self.removed = 0, n_pairs + 1
        self.observation_space = spaces.MultiDiscrete([n_pairs + 2] * self.n_cards)
        self.action_space = spaces.Discrete(self.n_cards)
        self._faces = np.zeros(self.n_cards, dtype=np.int64)  # face of each position, 1..n_pairs
        self._gone = np.zeros(self.n_cards, dtype=bool)
        self._shown = 0
        self._t = 0

    @property
    def shown(self) -> int:
        """Position of the card currently face up."""
        return self._shown

    def _obs(self) -> np.ndarray:
        obs = np.where(self._gone, self.removed, self.hidden).astype(np.int64)
        if not self._gone[self._shown]:  # after the last match nothing is left to show
            obs[self._shown] = self._faces[self._shown]
        return obs

    def _show_next(self) -> None:
        on_table = np.flatnonzero(~self._gone)
        self._shown = int(self.np_random.choice(on_table))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._faces = self.np_random.permutation(np.repeat(np.arange(1, self.n_pairs + 1), 2)).astype(
            np.int64
        )
        self._gone[:] = False
        self._t = 0
        self._show_next()
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._check_action(action)
        action = int(action)
        match = (
            action != self._shown
            and not self._gone[action]
            and self._faces[action] == self._faces[self._shown]
        )
        reward = 0.0
        if match:
            self._gone[[action, self._shown]] = True
        else:
            reward = -1.0
        self._t += 1
        terminated = bool(self._gone.all())
        if not terminated:
            self._show_next()
        return self._end_step(self._obs(), reward, terminated, success=terminated)
