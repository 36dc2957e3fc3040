"""The catalogue of built-in datasets: which env, how many episodes of each quality, base seed.

A leaf module (no lit_seqrl imports), so path lookup, error messages and the CLI can name the
built-in ids without importing the generator (``collect.py``) that rolls them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_DATASETS", "QUALITIES", "DefaultDatasetSpec"]

QUALITIES = ("random", "medium", "expert")


@dataclass(frozen=True)
class DefaultDatasetSpec:
    """A built-in dataset: which env, how many episodes of each quality, base seed."""

    env_id: str
    mixture: Mapping[str, int]
    seed: int
    description: str

    @property
    def num_episodes(self) -> int:
        return sum(self.mixture.values())


def _specs(env_id: str, name: str, seed: int) -> dict[str, DefaultDatasetSpec]:
    mixed = {q: 100 for q in QUALITIES}
    out = {
        f"lit_seqrl/{name}/mixed-v0": DefaultDatasetSpec(
            env_id, mixed, seed, f"{env_id}: 100 episodes each of random, medium and expert scripted control"
        )
    }
    for q in QUALITIES:
        out[f"lit_seqrl/{name}/{q}-v0"] = DefaultDatasetSpec(
            env_id, {q: 200}, seed, f"{env_id}: 200 episodes of {q}-quality scripted control"
        )
    return out


DEFAULT_DATASETS: dict[str, DefaultDatasetSpec] = {
    **_specs("Pendulum-v1", "pendulum", seed=0),
    **_specs("CartPole-v1", "cartpole", seed=0),
}
