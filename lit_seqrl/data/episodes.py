"""Offline episodes: loading minari datasets into plain numpy arrays.

Everything downstream (windows, DataModule, replay, agents) sees only :class:`Episode` and
:class:`OfflineDataset`; minari is touched by the data modules that read and write stores
(here, ``lazy.py``, ``paths.py``, ``store.py``, ``importers.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import gymnasium as gym
import minari
import numpy as np

from lit_seqrl.data.catalogue import DEFAULT_DATASETS
from lit_seqrl.data.paths import DatasetNotFoundError, find_data_path, missing_message
from lit_seqrl.errors import ConfigError

__all__ = [
    "DatasetInfo",
    "DatasetNotFoundError",
    "Episode",
    "OfflineDataset",
    "describe_dataset",
    "load_offline_dataset",
]


@dataclass
class Episode:
    """One episode as dense arrays; T is the number of steps (actions taken).

    Attributes:
        observations: (T, obs_dim) float32, the observation each action was taken in.
        actions: (T, act_dim) float32 for Box actions, (T,) int64 for Discrete actions.
        rewards: (T,) float32.
        terminated: the episode ended in a terminal state (no bootstrapping past it).
        truncated: the episode was cut by a time limit.
        id: the episode's index in its dataset.
        final_observation: (obs_dim,) float32 observation after the last step, or None.
            Minari stores it as row T+1; it is kept apart so ``observations`` lines up with actions.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool
    truncated: bool
    id: int
    final_observation: np.ndarray | None = None

    @property
    def length(self) -> int:
        """Number of steps T."""
        return len(self.rewards)

    @property
    def total_return(self) -> float:
        """Undiscounted return, accumulated in float64."""
        return float(np.sum(self.rewards, dtype=np.float64))


@dataclass
class OfflineDataset:
    """A list of episodes plus what is needed to build and evaluate a policy for them."""

    episodes: list[Episode]
    dataset_id: str
    env_id: str | None
    observation_space: gym.spaces.Space
    action_space: gym.spaces.Space
    ref_min_score: float | None = None
    ref_max_score: float | None = None

    @property
    def obs_dim(self) -> int:
        return _obs_dim(self.observation_space)

    @property
    def act_dim(self) -> int:
        """Action vector size, or the number of actions for a Discrete space."""
        return _act_dim(self.action_space)

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)

    @property
    def num_steps(self) -> int:
        return sum(ep.length for ep in self.episodes)


@dataclass
class DatasetInfo:
    """Cheap metadata of a dataset, known without reading its episodes.

    ``exists`` is False for a built-in default that is not generated yet; its dims then come
    from the environment and its reference scores are None until generation.
    """

    dataset_id: str
    obs_dim: int
    act_dim: int
    discrete: bool
    env_id: str | None
    ref_min_score: float | None
    ref_max_score: float | None
    exists: bool


def describe_dataset(source: str) -> DatasetInfo:
    """Dims, env id and reference scores of ``source`` (minari id or dataset directory).

    Reads only the dataset's metadata. A built-in default id that is not generated yet is
    described from its environment (``exists=False``). Raises DatasetNotFoundError otherwise.
    """
    data_path = find_data_path(source)
    if data_path is None:
        spec = DEFAULT_DATASETS.get(source)
        if spec is None:
            raise DatasetNotFoundError(missing_message(source))
        env = gym.make(spec.env_id)
        try:
            obs_space, act_space = env.observation_space, env.action_space
        finally:
            env.close()
        check_spaces(source, obs_space, act_space)
        return DatasetInfo(
            dataset_id=source,
            obs_dim=_obs_dim(obs_space),
            act_dim=_act_dim(act_space),
            discrete=isinstance(act_space, gym.spaces.Discrete),
            env_id=spec.env_id,
            ref_min_score=None,
            ref_max_score=None,
            exists=False,
        )
    ds = minari.MinariDataset(data_path)
    check_spaces(source, ds.observation_space, ds.action_space)
    ref_min, ref_max = reference_scores(ds)
    return DatasetInfo(
        dataset_id=ds.id,
        obs_dim=_obs_dim(ds.observation_space),
        act_dim=_act_dim(ds.action_space),
        discrete=isinstance(ds.action_space, gym.spaces.Discrete),
        env_id=dataset_env_id(ds),
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        exists=True,
    )


def load_offline_dataset(source: str) -> OfflineDataset:
    """Load every episode of a minari dataset into memory.

    Args:
        source: a minari dataset id (looked up under ``MINARI_DATASETS_PATH`` or minari's default
            directory) or the path of a minari dataset directory (the one holding ``data/``, or
            ``data/`` itself).

    Returns:
        OfflineDataset whose episodes hold observations (T, obs_dim) float32, actions
        (T, act_dim) float32 or (T,) int64, rewards (T,) float32.

    Raises:
        DatasetNotFoundError: nothing there; the message says how to get it.
        ValueError: non-finite values (naming the episode) or unsupported spaces.
    """
    data_path = find_data_path(source)
    if data_path is None:
        raise DatasetNotFoundError(missing_message(source))
    ds = minari.MinariDataset(data_path)
    obs_space, act_space = ds.observation_space, ds.action_space
    check_spaces(source, obs_space, act_space)
    discrete = isinstance(act_space, gym.spaces.Discrete)

    episodes = []
    for raw in ds.iterate_episodes():
        ep = _to_episode(raw, discrete)
        _check_finite(source, ep)
        episodes.append(ep)
    ref_min, ref_max = reference_scores(ds)
    return OfflineDataset(
        episodes=episodes,
        dataset_id=ds.id,
        env_id=dataset_env_id(ds),
        observation_space=obs_space,
        action_space=act_space,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
    )


def _to_episode(raw: minari.EpisodeData, discrete: bool) -> Episode:
    obs = np.asarray(raw.observations, dtype=np.float32)  # (T+1, obs_dim)
    num_steps = len(raw.rewards)
    if obs.shape[0] != num_steps + 1:
        raise ConfigError(
            f"episode {raw.id}: expected {num_steps + 1} observations for {num_steps} steps, got {obs.shape[0]}"
        )
    if discrete:
        actions = np.asarray(raw.actions).astype(np.int64).reshape(num_steps)
    else:
        actions = np.asarray(raw.actions, dtype=np.float32).reshape(num_steps, -1)
    return Episode(
        observations=np.ascontiguousarray(obs[:-1]),
        actions=actions,
        rewards=np.asarray(raw.rewards, dtype=np.float32).reshape(num_steps),
        terminated=bool(num_steps and raw.terminations[-1]),
        truncated=bool(num_steps and raw.truncations[-1]),
        id=int(raw.id),
        final_observation=obs[-1].copy(),
    )


def _check_finite(source: str, ep: Episode) -> None:
    for name in ("observations", "actions", "rewards"):
        values = getattr(ep, name)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            step = int(np.argwhere(~np.isfinite(values))[0][0])
            raise ConfigError(
                f"dataset {source!r}: episode {ep.id} has a non-finite value in {name} (first at step {step})"
            )


def check_spaces(source: str, obs_space: gym.spaces.Space, act_space: gym.spaces.Space) -> None:
    """Raise ValueError unless observations are a 1-D Box and actions a 1-D Box or Discrete."""
    # Sequence models here embed a flat vector per step; images/dicts need their own encoder.
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise ConfigError(f"dataset {source!r}: only 1-D Box observations are supported, got {obs_space}")
    box_ok = isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1
    if not (box_ok or isinstance(act_space, gym.spaces.Discrete)):
        raise ConfigError(
            f"dataset {source!r}: only 1-D Box or Discrete actions are supported, got {act_space}"
        )


def dataset_env_id(ds: minari.MinariDataset) -> str | None:
    """The env a policy trained on ``ds`` is evaluated in, or None when the dataset names none."""
    # The evaluation env is what a policy trained on the data is scored in; fall back to the
    # collection env, which is the same for most datasets.
    eval_spec = ds.storage.metadata.get("eval_env_spec")
    if isinstance(eval_spec, str):
        env_id = json.loads(eval_spec).get("id")
        if env_id:
            return str(env_id)
    return None if ds.env_spec is None else ds.env_spec.id


def reference_scores(ds: minari.MinariDataset) -> tuple[float | None, float | None]:
    """The dataset's stored (random, expert) reference returns; None where absent."""
    meta = ds.storage.metadata
    ref_min, ref_max = meta.get("ref_min_score"), meta.get("ref_max_score")
    return (
        None if ref_min is None else float(ref_min),
        None if ref_max is None else float(ref_max),
    )


def _obs_dim(space: gym.spaces.Space) -> int:
    return int(np.prod(space.shape))


def _act_dim(space: gym.spaces.Space) -> int:
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    return int(np.prod(space.shape))
