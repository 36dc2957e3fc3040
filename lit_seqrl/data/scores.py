"""Normalised scores: 0 = random policy, 100 = expert (D4RL convention)."""

from __future__ import annotations

# (random, expert) returns published with D4RL, keyed by environment family.
D4RL_REFERENCE: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


def normalized_score(ret: float, ref_min: float | None, ref_max: float | None) -> float | None:
    """``100 * (ret - ref_min) / (ref_max - ref_min)``; None where no reference exists."""
    if ref_min is None or ref_max is None or ref_max == ref_min:
        return None
    return 100.0 * (ret - ref_min) / (ref_max - ref_min)


def reference_for(env_id: str | None) -> tuple[float, float] | None:
    """The D4RL (random, expert) reference for a MuJoCo env id such as ``Hopper-v5``."""
    if not env_id:
        return None
    family = env_id.split("/")[-1].split("-")[0].lower()
    return D4RL_REFERENCE.get(family)
