"""What our POMDP environments share: a step limit kept inside the env, the action check, and how
a step ends (truncation, the success flag)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["StepLimitedEnv"]


class StepLimitedEnv(gym.Env):
    """A gymnasium env that truncates itself after ``max_steps`` steps.

    The limit lives in the env rather than in a ``TimeLimit`` wrapper, so an env built directly
    behaves like one from ``gymnasium.make``. Subclasses count ``self._t`` (steps of the
    episode: reset to 0, one per step) and end ``step`` with :meth:`_end_step`.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention is a class attribute

    def __init__(self, max_steps: int) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps
        self._t = 0

    def _check_action(self, action: Any) -> None:
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r} for {self.action_space}")

    def _end_step(
        self, obs: Any, reward: float, terminated: bool, success: bool
    ) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """The step's 5-tuple: truncated at the step limit unless terminated; ``info["is_success"]``
        (the flag every loop reads, see ``lit_seqrl.data.env_loop``) on the episode's last step."""
        truncated = not terminated and self._t >= self.max_steps
        info = {"is_success": bool(success)} if terminated or truncated else {}
        return obs, reward, terminated, truncated, info
