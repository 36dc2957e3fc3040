"""Import D4RL-style offline data into minari datasets.

Two layouts are read:

* **HDF5** as D4RL ships it: flat arrays over all steps, ``observations (N, obs_dim)``,
  ``actions (N, act_dim)``, ``rewards (N,)``, ``terminals (N,)``, optionally ``timeouts (N,)``
  and ``next_observations (N, obs_dim)``. Episodes end after a step whose terminal or timeout
  flag is set; rows after the last flag form a final episode kept as truncated.
* **Pickle** as the original Decision Transformer code stores D4RL data: a list of per-trajectory
  dicts with the same keys (each trajectory is split the same way; a trajectory whose last step
  is not terminal is a truncated episode). A pickled dict of flat arrays is read like HDF5.

Keys may be spelled in the singular or plural (``observation``/``observations``,
``terminal``/``terminals``/``dones``...); the first spelling present in :data:`KEY_SPELLINGS`
order wins. Everything is validated before anything is written, and writing goes through
``store.write_dataset`` (atomic), so a bad file never leaves a partial dataset behind.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
from minari.dataset.minari_dataset import parse_dataset_id

from lit_seqrl.data.episodes import Episode
from lit_seqrl.data.store import write_dataset
from lit_seqrl.errors import ConfigError, MissingInputError

__all__ = ["KEY_SPELLINGS", "ImportSummary", "import_dataset", "read_episodes"]

# Canonical name -> accepted spellings, in order of preference.
KEY_SPELLINGS: dict[str, tuple[str, ...]] = {
    "observations": ("observations", "observation", "obs"),
    "actions": ("actions", "action"),
    "rewards": ("rewards", "reward"),
    "terminals": ("terminals", "terminal", "terminations", "dones", "done"),
    "timeouts": ("timeouts", "timeout", "truncations"),
    "next_observations": ("next_observations", "next_observation", "next_obs"),
}
REQUIRED = ("observations", "actions", "rewards", "terminals")


@dataclass(frozen=True)
class ImportSummary:
    """What ``import_dataset`` stored."""

    dataset_id: str
    env_id: str | None
    episodes: int
    steps: int
    terminated: int  # episodes ending in a terminal state
    truncated: int  # episodes cut by a time limit or by the end of the data


def read_episodes(path: str | Path) -> list[Episode]:
    """Read and validate the episodes of a D4RL-style HDF5 file or pickle (see the module doc).

    Returns episodes with observations (T, obs_dim) float32, actions (T, act_dim) float32 or
    (T,) int64 for integer actions, rewards (T,) float32.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming the file and the missing key, the inconsistent lengths, the
            non-finite value or the unreadable format.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"no such file: {path}")
    where = path.name
    if h5py.is_hdf5(path):
        known = {k for spellings in KEY_SPELLINGS.values() for k in spellings}
        with h5py.File(path, "r") as f:  # read only the arrays we use (D4RL files hold many more)
            arrays = {k: f[k][()] for k in f if k in known and isinstance(f[k], h5py.Dataset)}
        return _split(arrays, where, first_id=0)
    raw = _load_pickle(path)
    if isinstance(raw, Mapping):
        return _split(raw, where, first_id=0)
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise ConfigError(f"{where}: expected a list of trajectory dicts, got {type(raw).__name__}")
    if not raw:
        raise ConfigError(f"{where}: the file holds no trajectories")
    episodes: list[Episode] = []
    for i, traj in enumerate(raw):
        if not isinstance(traj, Mapping):
            raise ConfigError(
                f"{where}: trajectory {i} is a {type(traj).__name__}, expected a dict of arrays"
            )
        episodes.extend(_split(traj, f"{where}: trajectory {i}", first_id=len(episodes)))
    _check_consistent(episodes, where)
    return episodes


def import_dataset(
    path: str | Path, dataset_id: str, env_id: str | None = None, *, overwrite: bool = False
) -> ImportSummary:
    """Read ``path`` (see :func:`read_episodes`) and store it as minari dataset ``dataset_id``.

    The env id is stored with the dataset, so training and ``evaluate`` find it. When that env
    can be built here its spaces are used (and checked against the data); when it cannot (e.g.
    MuJoCo is not installed) the spaces are inferred: unbounded observations, integer actions as
    Discrete, float actions bounded by [-1, 1] when all of them lie there (the D4RL convention),
    unbounded otherwise.

    Pickles can run code when loaded: import only files you trust.
    """
    _check_dataset_id(dataset_id)
    episodes = read_episodes(path)
    obs_space, act_space, env_built = _spaces(episodes, env_id)
    try:
        write_dataset(
            dataset_id,
            episodes,
            env_id,
            description=f"imported from {Path(path).name}",
            algorithm_name="imported (lit-seqrl data import)",
            overwrite=overwrite,
            # A buildable env stores its full spec; otherwise only the id (as the evaluation env).
            observation_space=None if env_built else obs_space,
            action_space=None if env_built else act_space,
        )
    except FileExistsError:
        raise ConfigError(f"dataset {dataset_id!r} already exists; pass --overwrite to replace it") from None
    return ImportSummary(
        dataset_id=dataset_id,
        env_id=env_id,
        episodes=len(episodes),
        steps=sum(ep.length for ep in episodes),
        terminated=sum(ep.terminated for ep in episodes),
        truncated=sum(ep.truncated for ep in episodes),
    )


# ----------------------------------------------------------------------------------- reading
def _load_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as err:  # unpickling raises anything from EOFError to ModuleNotFoundError
        raise ConfigError(
            f"{path.name}: neither an HDF5 file nor a readable pickle ({type(err).__name__}: {err})"
        ) from None


def _resolve(raw: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """Canonical name -> array for every known key present; a required key missing is an error."""
    out = {}
    for name, spellings in KEY_SPELLINGS.items():
        key = next((k for k in spellings if k in raw), None)
        if key is None:
            if name in REQUIRED:
                alternatives = "/".join(spellings)
                raise ConfigError(f"{where}: missing key {name!r} (accepted spellings: {alternatives})")
            continue
        out[name] = np.asarray(raw[key])
    return out


def _split(raw: Mapping[str, Any], where: str, first_id: int) -> list[Episode]:
    """Flat per-step arrays -> episodes, cut after each terminal or timeout step."""
    a = _resolve(raw, where)
    n = len(a["observations"]) if a["observations"].ndim else 0
    if n == 0:
        raise ConfigError(f"{where}: observations has no rows")
    for name, values in a.items():
        rows = len(values) if values.ndim else 0
        if rows != n:
            raise ConfigError(f"{where}: {name} has {rows} rows but observations has {n}")
    obs = _features(a["observations"], "observations", where)  # (N, D)
    next_obs = (
        _features(a["next_observations"], "next_observations", where) if "next_observations" in a else None
    )
    if next_obs is not None and next_obs.shape[1] != obs.shape[1]:
        raise ConfigError(
            f"{where}: next_observations has {next_obs.shape[1]} features but observations has {obs.shape[1]}"
        )
    actions = _actions(a["actions"], where)  # (N, A) float32 or (N,) int64
    rewards = _column(a["rewards"], "rewards", where).astype(np.float32)  # (N,)
    terminals = _column(a["terminals"], "terminals", where).astype(bool)  # (N,)
    timeouts = (
        _column(a["timeouts"], "timeouts", where).astype(bool) if "timeouts" in a else np.zeros(n, bool)
    )
    for name, values in (
        ("observations", obs),
        ("next_observations", next_obs),
        ("actions", actions),
        ("rewards", rewards),
    ):
        if values is not None and values.dtype.kind == "f" and not np.isfinite(values).all():
            row = int(np.argwhere(~np.isfinite(values))[0][0])
            raise ConfigError(f"{where}: {name} has a non-finite value at row {row}")

    ends = np.flatnonzero(terminals | timeouts)  # (E,) last step of each finished episode
    if len(ends) == 0 or ends[-1] != n - 1:
        ends = np.append(ends, n - 1)  # rows after the last flag: an unfinished episode
    episodes, start = [], 0
    for end in ends.tolist():
        stop = end + 1
        episodes.append(
            Episode(
                observations=np.ascontiguousarray(obs[start:stop]),
                actions=np.ascontiguousarray(actions[start:stop]),
                rewards=np.ascontiguousarray(rewards[start:stop]),
                terminated=bool(terminals[end]),
                # Cut by a time limit, or by the end of the data before any terminal.
                truncated=bool(timeouts[end] or not terminals[end]),
                id=first_id + len(episodes),
                # Without next_observations the observation after the last step is unknown (the next
                # row belongs to the next episode); the store then repeats the last one.
                final_observation=None if next_obs is None else next_obs[end].copy(),
            )
        )
        start = stop
    return episodes


def _features(values: np.ndarray, name: str, where: str) -> np.ndarray:
    if values.dtype.kind not in "biuf":
        raise ConfigError(f"{where}: {name} must be numeric, got dtype {values.dtype}")
    if values.ndim == 1:
        values = values[:, None]  # a scalar observation per step
    if values.ndim != 2:
        raise ConfigError(
            f"{where}: {name} must be (rows, features), got shape {values.shape} (images are not supported)"
        )
    return values.astype(np.float32)


def _actions(values: np.ndarray, where: str) -> np.ndarray:
    if values.dtype.kind in "biu" and (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        actions = values.reshape(-1).astype(np.int64)  # one integer per step: a Discrete action
        if actions.min() < 0:
            raise ConfigError(f"{where}: integer actions must be >= 0, got {int(actions.min())}")
        return actions
    return _features(values, "actions", where)


def _column(values: np.ndarray, name: str, where: str) -> np.ndarray:
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]  # (N, 1), as some pickles store rewards
    if values.ndim != 1:
        raise ConfigError(f"{where}: {name} must have one value per row, got shape {values.shape}")
    if values.dtype.kind not in "biuf":
        raise ConfigError(f"{where}: {name} must be numeric, got dtype {values.dtype}")
    return values


def _check_consistent(episodes: list[Episode], where: str) -> None:
    first = episodes[0]
    for ep in episodes[1:]:
        if ep.observations.shape[1] != first.observations.shape[1]:
            raise ConfigError(
                f"{where}: episode {ep.id} has {ep.observations.shape[1]} observation features, "
                f"episode 0 has {first.observations.shape[1]}"
            )
        if ep.actions.dtype != first.actions.dtype or ep.actions.shape[1:] != first.actions.shape[1:]:
            raise ConfigError(
                f"{where}: episode {ep.id} has actions of shape {ep.actions.shape[1:]} {ep.actions.dtype}, "
                f"episode 0 has {first.actions.shape[1:]} {first.actions.dtype}"
            )


# ----------------------------------------------------------------------------------- spaces
def _check_dataset_id(dataset_id: str) -> None:
    try:
        _, _, version = parse_dataset_id(dataset_id)
    except (ValueError, TypeError):  # TypeError: minari's parser on an id without a version
        version = None
    if version is None or "." in dataset_id:
        raise ConfigError(
            f"dataset id {dataset_id!r} must look like [namespace/]name-vN, e.g. d4rl/hopper/expert-v0"
        )


def _spaces(episodes: list[Episode], env_id: str | None) -> tuple[gym.spaces.Box, gym.spaces.Space, bool]:
    """(observation space, action space, whether the env was built) for ``episodes``."""
    obs_dim = episodes[0].observations.shape[1]
    discrete = episodes[0].actions.ndim == 1
    if env_id is not None:
        try:
            gym.spec(env_id)
        except gym.error.Error:
            raise ConfigError(f"unknown environment {env_id!r}: not registered with gymnasium") from None
        try:
            env = gym.make(env_id)
        except Exception as err:  # e.g. MuJoCo not installed: keep the id, infer the spaces
            warnings.warn(
                f"cannot build {env_id} here ({type(err).__name__}: {err}); spaces are inferred from the data",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            try:
                _check_env_spaces(env_id, env.observation_space, env.action_space, episodes)
                return env.observation_space, env.action_space, True
            finally:
                env.close()
    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    if discrete:
        n = max(int(ep.actions.max()) for ep in episodes) + 1
        return obs_space, gym.spaces.Discrete(n), False
    act_dim = episodes[0].actions.shape[1]
    in_unit_box = all(np.abs(ep.actions).max() <= 1.0 for ep in episodes)
    bound = 1.0 if in_unit_box else np.inf
    return obs_space, gym.spaces.Box(-bound, bound, (act_dim,), np.float32), False


def _check_env_spaces(
    env_id: str, obs_space: gym.spaces.Space, act_space: gym.spaces.Space, episodes: list[Episode]
) -> None:
    obs_dim = episodes[0].observations.shape[1]
    if not isinstance(obs_space, gym.spaces.Box) or obs_space.shape != (obs_dim,):
        raise ConfigError(
            f"env {env_id} has observation space {obs_space}, but the file's observations have {obs_dim} features"
        )
    actions = episodes[0].actions
    if isinstance(act_space, gym.spaces.Discrete):
        if actions.ndim != 1:
            raise ConfigError(
                f"env {env_id} has discrete actions, but the file's actions are vectors of {actions.shape[1]}"
            )
        top = max(int(ep.actions.max()) for ep in episodes)
        if top >= act_space.n:
            raise ConfigError(f"env {env_id} has {act_space.n} actions, but the file has action {top}")
    elif actions.ndim != 2 or act_space.shape != (actions.shape[1],):
        found = "integer actions" if actions.ndim == 1 else f"actions of {actions.shape[1]} values"
        raise ConfigError(f"env {env_id} has action space {act_space}, but the file has {found}")
    else:
        # Not an error (some expert data stores unclipped policy means), but a bounded policy head
        # cannot reproduce such actions, so say so.
        low, high = act_space.low, act_space.high
        outside = sum(int(np.any((ep.actions < low) | (ep.actions > high), axis=1).sum()) for ep in episodes)
        if outside:
            warnings.warn(
                f"{outside} of {sum(ep.length for ep in episodes)} steps have actions outside {env_id}'s "
                "bounds; a policy with a bounded (tanh) head cannot reproduce them",
                RuntimeWarning,
                stacklevel=4,
            )
