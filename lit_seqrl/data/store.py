"""Atomic, locked writing of episodes as minari datasets.

A dataset is built in a hidden staging directory next to the datasets root and renamed into
place in one step, so an interrupted write never leaves something that loads; writers of one id
are serialised by a file lock, so concurrent generators produce it once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector.episode_buffer import EpisodeBuffer

from lit_seqrl.data.episodes import Episode
from lit_seqrl.data.paths import datasets_root
from lit_seqrl.errors import ConfigError

try:  # POSIX only; elsewhere concurrent writers of the same id are simply not serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["dataset_lock", "is_stored", "write_dataset", "write_locked"]


def write_dataset(
    dataset_id: str,
    episodes: Sequence[Episode],
    env_id: str | None,
    *,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    description: str | None = None,
    algorithm_name: str | None = None,
    overwrite: bool = False,
    observation_space: gym.spaces.Space | None = None,
    action_space: gym.spaces.Space | None = None,
) -> None:
    """Store ``episodes`` (e.g. from ``rollout_policy``) as minari dataset ``dataset_id``, atomically.

    Give both reference scores or neither. Raises FileExistsError if the id exists and not
    ``overwrite``. Without spaces, the env ``env_id`` is built to read them (and its spec is
    stored); with both spaces given it is not built, which lets data be stored for an env whose
    dependencies are missing here: ``env_id`` (may be None) is then stored as the evaluation env.
    """
    with dataset_lock(dataset_id):
        write_locked(
            dataset_id,
            episodes,
            env_id,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            description=description,
            algorithm_name=algorithm_name,
            overwrite=overwrite,
            observation_space=observation_space,
            action_space=action_space,
        )


_process_lock = threading.RLock()  # flock does not order threads that share this process's env


def _safe_name(dataset_id: str) -> str:
    # minari ids contain no dots, so "." delimits the id in our hidden file names unambiguously.
    return dataset_id.replace("/", "__")


def is_stored(dataset_id: str) -> bool:
    """Whether ``dataset_id`` is complete under the datasets root (resolved now)."""
    return (datasets_root() / dataset_id / "data" / "metadata.json").is_file()


@contextlib.contextmanager
def dataset_lock(dataset_id: str) -> Iterator[None]:
    """Exclusive per-id lock across threads and processes sharing the datasets directory."""
    with _process_lock:
        root = datasets_root()
        # Hidden names: minari's listing skips dot-directories and ignores plain files.
        with open(root / f".lit_seqrl-{_safe_name(dataset_id)}.lock", "a") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)  # waits for another process's generation
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    # minari resolves every id against MINARI_DATASETS_PATH at call time; pointing it at the
    # staging directory for one call lets minari write the final id's metadata and namespaces
    # there. Process-global, hence only ever done under _process_lock.
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def write_locked(
    dataset_id: str,
    episodes: Sequence[Episode],
    env_id: str | None,
    *,
    ref_min_score: float | None,
    ref_max_score: float | None,
    description: str | None,
    algorithm_name: str | None,
    overwrite: bool,
    observation_space: gym.spaces.Space | None = None,
    action_space: gym.spaces.Space | None = None,
) -> None:
    """``write_dataset`` for a caller that already holds ``dataset_lock(dataset_id)``.

    (flock is per open file, so taking the lock again here would deadlock the holder.)
    """
    if (ref_min_score is None) != (ref_max_score is None):
        # minari would otherwise estimate the missing one with 100 random-policy episodes.
        raise ConfigError("give both ref_min_score and ref_max_score, or neither")
    if (observation_space is None) != (action_space is None):
        raise ConfigError("give both observation_space and action_space, or neither")
    if observation_space is None and env_id is None:
        raise ConfigError("give an env id or both spaces")
    if observation_space is not None and env_id is not None and ref_max_score is not None:
        # minari builds the evaluation env whenever reference scores come with one.
        raise ConfigError("reference scores with an env id need an env that can be built; give no spaces")
    # minari builds the env it is given; with explicit spaces only the evaluation env's id is kept.
    env_kwargs: dict[str, object] = (
        {"env": env_id}
        if observation_space is None
        else {"env": None, "observation_space": observation_space, "action_space": action_space}
    )
    if not episodes:
        raise ConfigError(f"no episodes to write for {dataset_id!r}")
    root = datasets_root()
    final = root / dataset_id
    if is_stored(dataset_id) and not overwrite:
        raise FileExistsError(f"dataset {dataset_id!r} already exists under {root}")
    safe = _safe_name(dataset_id)
    for kind in ("staging", "trash"):  # left by a killed process; we hold the id's lock
        for stale in root.glob(f".lit_seqrl-{kind}.{safe}.*"):
            shutil.rmtree(stale, ignore_errors=True)

    buffers = [_to_buffer(i, ep) for i, ep in enumerate(episodes)]
    staging = Path(tempfile.mkdtemp(prefix=f".lit_seqrl-staging.{safe}.", dir=root))
    trash = None
    try:
        with _minari_root(staging), warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"`(code_permalink|author|author_email)` is set to None"
            )
            warnings.filterwarnings("ignore", message=r"(`eval_env` is set to None|env_spec is None)")
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                **env_kwargs,
                eval_env=env_id,
                algorithm_name=algorithm_name or "unspecified",
                author="lit-seqrl",
                description=description or f"episodes collected in {env_id or 'an unnamed env'}",
                ref_min_score=ref_min_score,
                ref_max_score=ref_max_score,
            )
        _copy_namespace_metadata(staging, root, dataset_id)
        if final.exists():  # overwriting, or debris that does not load
            trash = Path(tempfile.mkdtemp(prefix=f".lit_seqrl-trash.{safe}.", dir=root))
            os.rename(final, trash / "old")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging / dataset_id, final)  # the only step that makes the id loadable
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def _to_buffer(index: int, ep: Episode) -> EpisodeBuffer:
    last = ep.final_observation if ep.final_observation is not None else ep.observations[-1]
    flags = np.zeros(ep.length, dtype=bool)
    terminations, truncations = flags.copy(), flags.copy()
    terminations[-1], truncations[-1] = ep.terminated, ep.truncated
    return EpisodeBuffer(
        id=index,
        observations=np.concatenate([ep.observations, np.asarray(last)[None]], axis=0),  # (T+1, obs_dim)
        actions=ep.actions,
        rewards=ep.rewards,
        terminations=terminations,
        truncations=truncations,
        infos={},
    )


def _copy_namespace_metadata(staging: Path, root: Path, dataset_id: str) -> None:
    """Give the real root the namespace markers minari wrote into staging (if it lacks them)."""
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        rel = Path(*parts[:depth]) / "namespace_metadata.json"
        src, dst = staging / rel, root / rel
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
