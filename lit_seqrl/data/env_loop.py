"""What every loop that steps gymnasium environments here shares: one policy protocol and one
success rule.

Three loops drive a policy: dataset collection (``data/collect.rollout_policy``, one env, with
exploration noise), evaluation (``evaluation/rollout.run_episodes``, a vector env) and online
Q-learning (``data/online.EnvCollector``, a list of envs feeding a replay). Each talks to the
policy through :class:`VectorPolicy`, over rows ``0..M-1`` (``M = 1`` for collection), and
each scores an episode with :func:`episode_success`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["FunctionPolicy", "VectorPolicy", "as_vector_policy", "episode_success", "success_rate"]

SUCCESS_KEYS = ("is_success", "success")


@runtime_checkable
class VectorPolicy(Protocol):
    """A policy over ``M`` environments stepped together. Rows are env indices ``0..M-1``.

    A loop calls ``reset`` with every row before the first ``act``, then per step ``act`` and
    ``observe``, and ``reset`` again with the rows whose episode ended.
    """

    def reset(self, rows: np.ndarray) -> None:
        """Rows (bool ``(M,)``) that start a new episode before the next ``act``."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Observations ``(M, ...)`` -> actions ``(M, ...)`` for every row."""

    def observe(self, rewards: np.ndarray) -> None:
        """Rewards ``(M,)`` of the step just taken, before any row is reset."""


class FunctionPolicy:
    """A memoryless function of one observation as a :class:`VectorPolicy`.

    ``fn``: observation ``(obs_dim,)`` -> action (an int for Discrete spaces, an array for Box);
    it is called once per row, so ``act`` maps ``(M, obs_dim)`` to ``(M,)`` or ``(M, act_dim)``.
    """

    def __init__(self, fn: Callable[[np.ndarray], Any]) -> None:
        self.fn = fn

    def reset(self, rows: np.ndarray) -> None:
        """Nothing to forget."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray([self.fn(o) for o in obs])

    def observe(self, rewards: np.ndarray) -> None:
        """Rewards do not change a memoryless policy."""


def as_vector_policy(policy: VectorPolicy | Callable[[np.ndarray], Any]) -> VectorPolicy:
    """``policy`` itself when it has ``act``; a plain function wrapped in :class:`FunctionPolicy`."""
    return policy if isinstance(policy, VectorPolicy) else FunctionPolicy(policy)


def episode_success(info: Mapping[str, Any], row: int | None = None) -> bool | None:
    """Whether an episode succeeded, from the ``info`` of its last step: the env's own flag.

    The one rule of every loop (so ``train/success_rate`` and ``eval/success_rate`` measure the
    same thing): ``info["is_success"]`` (or ``info["success"]``) when the env reports it, else
    None, "not known". An env without the flag has no success rate; its return says how it went.

    ``row``: for a vector env's ``infos``, whose entries are ``(M,)`` arrays with a ``"_<key>"``
    mask of the rows that reported the key.
    """
    for key in SUCCESS_KEYS:
        if key not in info:
            continue
        if row is None:
            return bool(info[key])
        reported = info.get(f"_{key}")
        if reported is None or reported[row]:
            return bool(info[key][row])
    return None


def success_rate(flags: Sequence[float | None]) -> float | None:
    """Mean of the known flags, None when no episode reported one."""
    known = [f for f in flags if f is not None]
    return float(np.mean(known)) if known else None
