"""Car Flag: a 1-D car must learn from a priest which of two flags is heaven.

The car starts near the centre of the line ``[-1.1, 1.1]`` at rest. Flags stand at ``-1`` and
``+1``; one of them (drawn at reset) gives ``+1`` and the other ``-1``, and reaching either ends
the episode. A priest stands at ``+0.5``: while the car is within ``0.2`` of him the third
observation entry is ``+1`` (heaven on the right) or ``-1`` (heaven on the left), otherwise ``0``.
Once the car leaves the priest the information is gone from the observation, so a policy has to
remember it. Physics and constants follow the DTQN paper's Car Flag (Esslinger et al., 2022).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from lit_seqrl.envs.base import StepLimitedEnv


class CarFlagEnv(StepLimitedEnv):
    """Car Flag with discrete actions ``0: push left, 1: no push, 2: push right``.

    Observation: ``float32[3] = (position, velocity, priest signal)``.
    Reward: ``+1`` on reaching heaven, ``-1`` on reaching hell, ``0`` otherwise.
    Termination: a flag is reached. Truncation: ``max_steps`` steps (200).

    Optimal return: ``+1.0`` in every episode (drive right until the priest speaks, then to heaven:
    about 36 steps when heaven is on the right and about 85 when it is on the left). A memoryless
    policy can still do well by committing to a direction while the priest is in view and letting
    the velocity carry that decision, so Car Flag tests memory more gently than Heaven/Hell.
    ``info["is_success"]`` is True when an episode ends in heaven.
    """

    max_position = 1.1
    max_speed = 0.07
    power = 0.0015
    flag_position = 1.0
    priest_position = 0.5
    priest_radius = 0.2
    start_radius = 0.2

    def __init__(self, max_steps: int = 200) -> None:
        super().__init__(max_steps)
        high = np.array([self.max_position, self.max_speed, 1.0], dtype=np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self._position = 0.0
        self._velocity = 0.0
        self._heaven = 1.0  # +1: heaven on the right, -1: on the left
        self._t = 0

    def _obs(self) -> np.ndarray:
        near_priest = abs(self._position - self.priest_position) <= self.priest_radius
        signal = self._heaven if near_priest else 0.0
        return np.array([self._position, self._velocity, signal], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._heaven = 1.0 if self.np_random.integers(2) == 0 else -1.0
        self._position = float(self.np_random.uniform(-self.start_radius, self.start_radius))
        self._velocity = 0.0
        self._t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._check_action(action)
        force = int(action) - 1
        self._velocity = float(np.clip(self._velocity + force * self.power, -self.max_speed, self.max_speed))
        self._position = float(
            np.clip(self._position + self._velocity, -self.max_position, self.max_position)
        )
        self._t += 1

        reward = 0.0
        terminated = abs(self._position) >= self.flag_position
        if terminated:
            reward = 1.0 if np.sign(self._position) == self._heaven else -1.0
        return self._end_step(self._obs(), reward, terminated, success=reward > 0)
