"""Vectorised episode runner: N episodes over M gymnasium envs stepped together.

Each env is assigned its share of the episodes before starting (env i runs episodes
i, i+M, ...), with seed ``seed + episode_index``, so results are repeatable and short episodes
are not over-represented in the mean (the bias of "first N episodes to finish"). The vector env
runs with autoreset disabled: finished rows are reset explicitly, with their next episode's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from lit_seqrl.data.env_loop import VectorPolicy, episode_success, success_rate
from lit_seqrl.data.progress import progress_bar
from lit_seqrl.errors import ConfigError

__all__ = [
    "EpisodeResult",
    "VectorPolicy",
    "check_env_matches",
    "make_vector_env",
    "run_episodes",
    "summarize",
]


@dataclass
class EpisodeResult:
    index: int
    seed: int
    total_return: float
    length: int
    success: bool | None = None


def make_vector_env(env_id: str, num_envs: int, **env_kwargs: Any) -> gym.vector.VectorEnv:
    """A synchronous vector env with autoreset disabled (we reset rows ourselves, with seeds)."""
    return gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id, **env_kwargs) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
    )


def check_env_matches(env_id: str, obs_dim: int, act_dim: int, discrete: bool) -> None:
    """Raise ``ValueError`` naming both shapes when ``env_id``'s spaces differ from the agent's."""
    env = gym.make(env_id)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    env_obs = tuple(obs_space.shape or ())
    if int(np.prod(env_obs)) != obs_dim:
        raise ConfigError(
            f"env {env_id} observations have shape {env_obs}, but the agent was trained on shape ({obs_dim},)"
        )
    if discrete != isinstance(act_space, gym.spaces.Discrete):
        kind = "discrete" if discrete else "continuous"
        raise ConfigError(
            f"env {env_id} has action space {act_space}, but the agent was trained on {kind} actions"
        )
    env_act = int(act_space.n) if discrete else int(np.prod(act_space.shape))
    if env_act != act_dim:
        what = "actions" if discrete else "action shape"
        raise ConfigError(
            f"env {env_id} has {what} {env_act if discrete else act_space.shape}, but the agent was trained on {act_dim if discrete else (act_dim,)}"
        )


def run_episodes(
    env_id: str,
    policy: VectorPolicy,
    episodes: int,
    num_envs: int = 8,
    seed: int = 0,
    progress: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> list[EpisodeResult]:
    """Run exactly ``episodes`` episodes of ``policy`` on ``min(num_envs, episodes)`` envs.

    Returns the results ordered by episode index.
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    m = max(1, min(num_envs, episodes))
    queue = [list(range(i, episodes, m)) for i in range(m)]  # episode indices per env, fixed up front
    current = np.array([q.pop(0) for q in queue])  # (M) episode index running in each row
    active = np.ones(m, dtype=bool)
    returns, lengths = np.zeros(m), np.zeros(m, dtype=np.int64)
    results: list[EpisodeResult] = []
    envs = make_vector_env(env_id, m, **(env_kwargs or {}))
    try:
        obs, _ = envs.reset(seed=[int(seed + e) for e in current])
        policy.reset(np.ones(m, dtype=bool))
        with progress_bar(f"evaluating {env_id}", episodes, enabled=progress, transient=True) as advance:
            while active.any():
                actions = policy.act(obs)
                obs, rewards, terminated, truncated, infos = envs.step(actions)
                policy.observe(np.asarray(rewards, dtype=np.float64))
                returns += np.where(active, rewards, 0.0)
                lengths += active
                done = (terminated | truncated) & active
                if not (terminated | truncated).any():
                    continue
                for row in np.flatnonzero(done):
                    results.append(
                        EpisodeResult(
                            int(current[row]),
                            int(seed + current[row]),
                            float(returns[row]),
                            int(lengths[row]),
                            episode_success(infos, row),
                        )
                    )
                    if advance is not None:
                        advance(results[-1])
                    if queue[row]:
                        current[row] = queue[row].pop(0)
                    else:
                        active[row] = False
                # Rows whose episodes are all done are reset too (and ignored) so no env is stepped
                # past its end.
                reset = terminated | truncated
                seeds = [int(seed + current[r]) if active[r] else None for r in range(m)]
                obs, _ = envs.reset(seed=seeds, options={"reset_mask": np.asarray(reset, dtype=bool)})
                returns[reset], lengths[reset] = 0.0, 0
                policy.reset(np.asarray(reset, dtype=bool))
    finally:
        envs.close()
    return sorted(results, key=lambda r: r.index)


def summarize(results: list[EpisodeResult]) -> dict[str, float | None]:
    """Mean/std of return and length, and the success rate (None where the env reports no success)."""
    rets = np.array([r.total_return for r in results])
    lens = np.array([r.length for r in results])
    return {
        "return_mean": float(rets.mean()),
        "return_std": float(rets.std()),
        "length_mean": float(lens.mean()),
        "success_rate": success_rate([r.success for r in results]),
    }
