"""Generate the built-in offline datasets locally and store them as minari datasets.

A default dataset is a mixture of episodes from one scripted controller run at several
qualities (``random`` → ``medium`` → ``expert``). Its reference scores are the mean returns of
the random and the expert quality, so a normalised score of 0 means random and 100 expert.

Writing goes through ``store.py``: atomic (an interrupted generation never leaves something
that loads) and locked per id (concurrent callers generate a dataset once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from lit_seqrl.data.catalogue import DEFAULT_DATASETS, QUALITIES, DefaultDatasetSpec
from lit_seqrl.data.controllers import CartPoleController, PendulumController
from lit_seqrl.data.env_loop import VectorPolicy, as_vector_policy
from lit_seqrl.data.episodes import Episode, OfflineDataset, load_offline_dataset
from lit_seqrl.data.paths import DatasetNotFoundError, find_data_path, missing_message
from lit_seqrl.data.progress import progress_bar
from lit_seqrl.data.store import dataset_lock, is_stored, write_dataset, write_locked
from lit_seqrl.errors import ConfigError

__all__ = [
    "DEFAULT_DATASETS",
    "QUALITIES",
    "DefaultDatasetSpec",
    "Quality",
    "collect_dataset",
    "ensure_dataset",
    "rollout_policy",
    "write_dataset",
]

Policy = Callable[[np.ndarray], Any]

# Episode j of quality q resets with seed + _SEED_STRIDE * QUALITIES.index(q) + j, in every
# default dataset of an env: the qualities never share start states, and a smaller dataset's
# episodes are a prefix of a larger one's.
_SEED_STRIDE = 100_000
# Reference scores average this many episodes of the random / expert quality.
REFERENCE_EPISODES = 100


@dataclass(frozen=True)
class Quality:
    """One data quality: a controller plus exploration noise (see ``rollout_policy``)."""

    controller: Callable[[], Policy]  # factory, so a stateful controller starts fresh
    action_noise: float = 0.0
    epsilon: float = 0.0


# Measured mean returns over 100 episodes are in the comments (gymnasium 1.4).
QUALITY_SETTINGS: dict[str, dict[str, Quality]] = {
    "Pendulum-v1": {
        "random": Quality(PendulumController, epsilon=1.0),  # about -1200
        "medium": Quality(PendulumController, action_noise=0.5, epsilon=0.5),  # about -590
        "expert": Quality(PendulumController),  # about -143
    },
    "CartPole-v1": {
        "random": Quality(CartPoleController, epsilon=1.0),  # about 23
        "medium": Quality(CartPoleController, epsilon=0.45),  # about 195
        "expert": Quality(CartPoleController),  # 500
    },
}


def rollout_policy(
    env_id: str,
    policy: VectorPolicy | Policy,
    num_episodes: int,
    seed: int,
    action_noise: float = 0.0,
    epsilon: float = 0.0,
    *,
    max_episode_steps: int | None = None,
    on_episode: Callable[[Episode], None] | None = None,
) -> list[Episode]:
    """Run ``policy`` for whole episodes; episode i resets with ``seed + i``.

    Per step, with probability ``epsilon`` a uniformly random action replaces the policy's;
    otherwise Box actions get Gaussian noise of std ``action_noise`` x half the action range,
    clipped to the bounds (ignored for Discrete). The policy acts every step, even when its
    action is replaced, so a stateful policy sees every observation.

    Args:
        policy: a :class:`~lit_seqrl.data.env_loop.VectorPolicy` driven over one env (row 0),
            e.g. a return-conditioned agent, or a function of one observation (obs_dim,) ->
            action ((act_dim,) array for Box, int for Discrete).
        on_episode: called with each finished episode (e.g. to advance a progress bar).

    Returns:
        Episodes with ids 0..num_episodes-1.
    """
    policy = as_vector_policy(policy)
    env = gym.make(env_id, max_episode_steps=max_episode_steps)
    space = env.action_space
    discrete = isinstance(space, gym.spaces.Discrete)
    if not discrete:
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        half_range = (high - low) / 2.0
    episodes = []
    try:
        for i in range(num_episodes):
            # A separate stream from the env's own (which reset seeds with the same integer).
            rng = np.random.default_rng([seed + i, 0x5EED])
            obs, _ = env.reset(seed=seed + i)
            policy.reset(np.ones(1, dtype=bool))
            observations, actions, rewards = [obs], [], []
            terminated = truncated = False
            while not (terminated or truncated):
                action = policy.act(np.asarray(obs)[None])[0]
                if discrete:
                    action = int(action)
                    if epsilon > 0 and rng.random() < epsilon:
                        action = int(space.start) + int(rng.integers(space.n))
                else:
                    action = np.asarray(action, dtype=np.float64).reshape(space.shape)
                    if epsilon > 0 and rng.random() < epsilon:
                        action = rng.uniform(low, high)
                    elif action_noise > 0:
                        action = action + action_noise * half_range * rng.standard_normal(space.shape)
                    action = np.clip(action, low, high).astype(np.float32)
                obs, reward, terminated, truncated, _ = env.step(action)
                policy.observe(np.array([reward], dtype=np.float64))
                observations.append(obs)
                actions.append(action)
                rewards.append(reward)
            ep = Episode(
                observations=np.asarray(observations[:-1], dtype=np.float32),
                actions=np.asarray(actions, dtype=np.int64 if discrete else np.float32),
                rewards=np.asarray(rewards, dtype=np.float32),
                terminated=bool(terminated),
                truncated=bool(truncated),
                id=i,
                final_observation=np.asarray(observations[-1], dtype=np.float32),
            )
            episodes.append(ep)
            if on_episode is not None:
                on_episode(ep)
    finally:
        env.close()
    return episodes


def collect_dataset(
    dataset_id: str,
    *,
    overwrite: bool = False,
    progress: bool = True,
    num_episodes: int | None = None,
) -> OfflineDataset:
    """Generate the built-in dataset ``dataset_id`` (a key of DEFAULT_DATASETS) and load it.

    If it already exists it is loaded unless ``overwrite``. ``num_episodes`` shrinks (or grows)
    the mixture proportionally, for quick smoke runs; it is then stored under the same id.
    Reference scores are the mean returns of the first ``REFERENCE_EPISODES`` random- and
    expert-quality episodes at the env's fixed seeds (rolled out separately when the dataset has
    none of that quality), so every full default dataset of one env stores the same two numbers.
    """
    spec = DEFAULT_DATASETS.get(dataset_id)
    if spec is None:
        raise ConfigError(
            f"{dataset_id!r} is not a built-in dataset; built-in ids: {sorted(DEFAULT_DATASETS)}"
        )
    mixture = dict(spec.mixture) if num_episodes is None else _scale_mixture(spec.mixture, num_episodes)
    n_ref = REFERENCE_EPISODES if num_episodes is None else max(1, min(REFERENCE_EPISODES, num_episodes))

    with dataset_lock(dataset_id):
        # Checked under the lock: a caller that waited finds the first caller's result.
        if is_stored(dataset_id) and not overwrite:
            return load_offline_dataset(dataset_id)
        with progress_bar(f"Generating {dataset_id}", sum(mixture.values()), enabled=progress) as advance:
            by_quality = {q: _rollout_quality(spec, q, n, advance) for q, n in mixture.items() if n > 0}
        ref_min = _reference_return(spec, "random", by_quality, n_ref)
        ref_max = _reference_return(spec, "expert", by_quality, n_ref)
        episodes = [ep for q in QUALITIES for ep in by_quality.get(q, [])]
        write_locked(
            dataset_id,
            episodes,
            spec.env_id,
            ref_min_score=ref_min,
            ref_max_score=ref_max,
            description=spec.description,
            algorithm_name="lit_seqrl scripted controllers (" + ", ".join(by_quality) + ")",
            overwrite=True,
        )
    return load_offline_dataset(dataset_id)


def ensure_dataset(dataset_id: str, *, progress: bool = True) -> None:
    """Make ``dataset_id`` available: no-op if present, generate it if it is a built-in default.

    Raises DatasetNotFoundError (with how to get it) for any other missing id or path.
    """
    if find_data_path(dataset_id) is not None:
        return
    if dataset_id not in DEFAULT_DATASETS:
        raise DatasetNotFoundError(missing_message(dataset_id))
    collect_dataset(dataset_id, progress=progress)


def _rollout_quality(
    spec: DefaultDatasetSpec, quality: str, n: int, advance: Callable[[Episode], None] | None = None
) -> list[Episode]:
    q = QUALITY_SETTINGS[spec.env_id][quality]
    return rollout_policy(
        spec.env_id,
        q.controller(),
        n,
        seed=spec.seed + _SEED_STRIDE * QUALITIES.index(quality),
        action_noise=q.action_noise,
        epsilon=q.epsilon,
        on_episode=advance,
    )


def _reference_return(
    spec: DefaultDatasetSpec, quality: str, by_quality: Mapping[str, list[Episode]], n_ref: int
) -> float:
    # Same seeds as the dataset's own episodes of that quality, so reuse them when present.
    episodes = by_quality.get(quality) or _rollout_quality(spec, quality, n_ref)
    return float(np.mean([ep.total_return for ep in episodes[:n_ref]]))


def _scale_mixture(mixture: Mapping[str, int], total: int) -> dict[str, int]:
    """Split ``total`` episodes in the mixture's proportions (largest remainder)."""
    if total < 1:
        raise ConfigError(f"num_episodes must be >= 1, got {total}")
    weight = sum(mixture.values())
    exact = {q: total * n / weight for q, n in mixture.items()}
    counts = {q: int(x) for q, x in exact.items()}
    by_remainder = sorted(exact, key=lambda q: exact[q] - counts[q], reverse=True)
    for q in by_remainder[: total - sum(counts.values())]:
        counts[q] += 1
    return counts
