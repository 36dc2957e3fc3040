"""Partially observable environments for memory-based RL, registered with gymnasium.

Importing this package registers (once, however often it is imported):

=================================  ==================================================
``lit_seqrl/CarFlag-v0``           :class:`~lit_seqrl.envs.car_flag.CarFlagEnv`
``lit_seqrl/HeavenHell-v0``        :class:`~lit_seqrl.envs.heaven_hell.HeavenHellEnv` (gym-pomdps' heavenhell_3)
``lit_seqrl/MemoryCards-v0``       :class:`~lit_seqrl.envs.memory_cards.MemoryCardsEnv`
``lit_seqrl/Hallway-v0``           :class:`~lit_seqrl.envs.hallway.HallwayEnv` (Littman's 60 states)
``lit_seqrl/TMaze-v0``             :class:`~lit_seqrl.envs.tmaze.TMazeEnv` (small Heaven/Hell check)
``lit_seqrl/CountingHallway-v0``   :class:`~lit_seqrl.envs.counting_hallway.CountingHallwayEnv`
``lit_seqrl/MiniGridMemory-v0``    MiniGrid-MemoryS7-v0, flat observation (needs ``minigrid``)
=================================  ==================================================

Step limits live inside the environments (``max_steps``), so an environment built directly
behaves like one from ``gymnasium.make``.
"""

from __future__ import annotations

import gymnasium as gym

from lit_seqrl.envs.car_flag import CarFlagEnv
from lit_seqrl.envs.counting_hallway import CountingHallwayEnv
from lit_seqrl.envs.hallway import HallwayEnv
from lit_seqrl.envs.heaven_hell import HeavenHellEnv
from lit_seqrl.envs.memory_cards import MemoryCardsEnv
from lit_seqrl.envs.minigrid_memory import CompactMiniGridObs, make_minigrid_memory, minigrid_available
from lit_seqrl.envs.tmaze import TMazeEnv

ENV_IDS: dict[str, str] = {
    "lit_seqrl/CarFlag-v0": "lit_seqrl.envs.car_flag:CarFlagEnv",
    "lit_seqrl/HeavenHell-v0": "lit_seqrl.envs.heaven_hell:HeavenHellEnv",
    "lit_seqrl/MemoryCards-v0": "lit_seqrl.envs.memory_cards:MemoryCardsEnv",
    "lit_seqrl/Hallway-v0": "lit_seqrl.envs.hallway:HallwayEnv",
    "lit_seqrl/MiniGridMemory-v0": "lit_seqrl.envs.minigrid_memory:make_minigrid_memory",
    "lit_seqrl/TMaze-v0": "lit_seqrl.envs.tmaze:TMazeEnv",
    "lit_seqrl/CountingHallway-v0": "lit_seqrl.envs.counting_hallway:CountingHallwayEnv",
}


def register_envs() -> None:
    """Register every id in :data:`ENV_IDS` that is not registered yet (idempotent)."""
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


register_envs()

__all__ = [
    "ENV_IDS",
    "CarFlagEnv",
    "CompactMiniGridObs",
    "CountingHallwayEnv",
    "HallwayEnv",
    "HeavenHellEnv",
    "MemoryCardsEnv",
    "TMazeEnv",
    "make_minigrid_memory",
    "minigrid_available",
    "register_envs",
]
