"""MiniGrid's Memory task behind a compact, flat observation (optional dependency ``minigrid``).

In ``MiniGrid-MemoryS7-v0`` the agent sees an object in a start room, walks down a corridor and
must step next to the matching one of two objects at its end; the first object is out of view by
then. Reward ``1 - 0.9 * steps / max_steps`` on success, ``0`` otherwise (optimal return just under
``1``). The wrapper turns MiniGrid's dict observation into ``float32[7 * 7 * 3 + 4]``: the egocentric
view (object, colour, state channels scaled to ``[0, 1]``) and a one-hot of the agent's direction.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# Upper bounds of MiniGrid's (object index, colour index, state) channels, used to scale to [0, 1].
_CHANNEL_MAX = np.array([10.0, 5.0, 2.0], dtype=np.float32)


class CompactMiniGridObs(gym.ObservationWrapper):
    """Flatten a MiniGrid ``{"image", "direction", "mission"}`` observation to a float vector.

    The mission string is dropped: in the Memory tasks it never changes.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        image_space = env.observation_space["image"]
        self._image_size = int(np.prod(image_space.shape))
        self._scale = np.resize(_CHANNEL_MAX, image_space.shape).reshape(-1)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self._image_size + 4,), dtype=np.float32)

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        image = observation["image"].reshape(-1).astype(np.float32) / self._scale
        direction = np.zeros(4, dtype=np.float32)
        direction[int(observation["direction"])] = 1.0
        return np.concatenate([np.clip(image, 0.0, 1.0), direction])


def minigrid_available() -> bool:
    """Whether the optional ``minigrid`` package can be imported."""
    try:
        import minigrid  # noqa: F401
    except Exception:
        return False
    return True


def make_minigrid_memory(env_id: str = "MiniGrid-MemoryS7-v0", **kwargs: Any) -> gym.Env:
    """Build a MiniGrid memory task wrapped in :class:`CompactMiniGridObs`.

    Raises:
        ImportError: if ``minigrid`` is not installed (``pip install minigrid``).
    """
    try:
        import minigrid  # noqa: F401  (importing registers the MiniGrid ids)
    except Exception as err:
        raise ImportError(
            f"{env_id} needs the optional package 'minigrid' (pip install minigrid): {err}"
        ) from err
    return CompactMiniGridObs(gym.make(env_id, **kwargs))
