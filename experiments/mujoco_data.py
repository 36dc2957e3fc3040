"""D4RL-style MuJoCo datasets made locally from expert MLP policies (experiment tooling).

    python experiments/mujoco_data.py --experts DIR [--env hopper walker2d halfcheetah]

For each env (Hopper-v5, Walker2d-v5, HalfCheetah-v5) this

1. runs a *calibration sweep*: the expert's mean action degraded by Gaussian action noise of std
   ``sigma`` (x half the action range) and, per step with probability ``p``, replaced by a
   uniformly random action; it prints the mean return of every (sigma, p);
2. picks the behaviour policies from the sweep: ``expert`` = (0.1, 0) (a mildly stochastic
   expert, like D4RL's SAC policies), ``medium`` = the setting whose mean return is nearest to
   ``--medium-fraction`` of the expert's, ``random`` = uniform actions;
3. writes five minari datasets ``d4rlstyle/<env>/<name>-v0``: ``random``, ``medium``,
   ``medium-replay`` (equal step budgets from every sweep setting between random and medium, so
   many short poor episodes and a tail up to medium, like a learner's replay buffer; no episode
   at or above ``--replay-cap``, by default the expert reference return),
   ``expert`` and ``medium-expert`` (the medium and expert datasets' episodes together);
4. prints the dataset table (episodes, steps, return mean/min/max, D4RL-normalised mean).

The expert files (``<Env>.pkl`` as in the course repository's format) are read only here: the
datasets are ordinary minari datasets with D4RL's reference scores, used like any other id.
Existing ids are kept (``--overwrite`` rewrites them).
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from lit_seqrl.data.collect import rollout_policy
from lit_seqrl.data.episodes import Episode, load_offline_dataset
from lit_seqrl.data.scores import D4RL_REFERENCE, normalized_score
from lit_seqrl.data.store import is_stored, write_dataset

ENVS = {
    "hopper": ("Hopper-v5", "Hopper"),
    "walker2d": ("Walker2d-v5", "Walker2d"),
    "halfcheetah": ("HalfCheetah-v5", "HalfCheetah"),
}
SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.2)
PS = (0.0, 0.03, 0.1, 0.3)
EXPERT = (0.1, 0.0)
NAMES = ("random", "medium", "medium-replay", "medium-expert", "expert")
# Reset seeds: each dataset (and the sweep) gets its own block, all far below the evaluation
# seeds of the experiments (>= 1e6), so no evaluation start state is in the data.
_SEED_BASE = {"sweep": 0, "random": 100_000, "medium": 200_000, "medium-replay": 300_000, "expert": 400_000}


class ExpertMLP:
    """The mean action of a pickled Gaussian MLP policy: tanh hidden layers, obs standardised."""

    def __init__(self, path: Path) -> None:
        d = pickle.loads(path.read_bytes())
        if d.get("nonlin_type", "tanh") != "tanh":
            raise ValueError(f"{path}: expected tanh hidden layers, got {d['nonlin_type']}")
        g = d["GaussianPolicy"]
        norm = g["obsnorm"]["Standardizer"]
        self.mean = np.asarray(norm["mean_1_D"], dtype=np.float64)
        self.std = np.sqrt(np.maximum(np.asarray(norm["meansq_1_D"]) - self.mean**2, 0.0))
        hidden = g["hidden"]["FeedforwardNet"]
        self.layers = [
            (np.asarray(hidden[k]["AffineLayer"]["W"]), np.asarray(hidden[k]["AffineLayer"]["b"]))
            for k in sorted(hidden, key=lambda name: int(name.split("_")[1]))
        ]
        self.out = (np.asarray(g["out"]["AffineLayer"]["W"]), np.asarray(g["out"]["AffineLayer"]["b"]))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """(obs_dim,) -> (act_dim,) mean action."""
        h = (np.asarray(obs, dtype=np.float64)[None] - self.mean) / (self.std + 1e-6)
        for w, b in self.layers:
            h = np.tanh(h @ w + b)
        return (h @ self.out[0] + self.out[1])[0]


def rollout_steps(
    env_id: str,
    policy: ExpertMLP,
    steps: int,
    seed: int,
    sigma: float,
    p: float,
    max_return: float = float("inf"),
) -> list[Episode]:
    """Whole episodes of the degraded policy until at least ``steps`` steps are collected.

    Episodes whose return is ``max_return`` or more are rolled but not kept.
    """
    episodes: list[Episode] = []
    total = rolled = 0
    while total < steps:
        # In chunks (one env per call), sized by the mean length so far, so short episodes do not
        # each pay for building an env; the i-th episode rolled always resets with seed + i.
        mean_len = total / len(episodes) if episodes else 1000.0
        chunk = int(min(1000, max(1, (steps - total) / max(mean_len, 1.0))))
        for ep in rollout_policy(env_id, policy, chunk, seed=seed + rolled, action_noise=sigma, epsilon=p):
            if total >= steps:
                break
            rolled += 1
            if ep.total_return >= max_return:
                continue
            ep.id = len(episodes)
            episodes.append(ep)
            total += ep.length
    return episodes


def calibrate(env_id: str, policy: ExpertMLP, episodes: int) -> dict[tuple[float, float], float]:
    """Mean return of every (sigma, p) of the sweep, and of uniform random actions at (0, 1)."""
    table: dict[tuple[float, float], float] = {}
    for k, setting in enumerate([(s, p) for s in SIGMAS for p in PS] + [(0.0, 1.0)]):
        eps = rollout_policy(
            env_id,
            policy,
            episodes,
            seed=_SEED_BASE["sweep"] + 1000 * k,
            action_noise=setting[0],
            epsilon=setting[1],
        )
        table[setting] = float(np.mean([e.total_return for e in eps]))
    return table


def print_sweep(name: str, table: dict[tuple[float, float], float]) -> None:
    print(
        f"\n## Calibration sweep: {name} (mean return; rows sigma, columns p; random actions: "
        f"{table[(0.0, 1.0)]:.0f})\n"
    )
    print("| sigma \\ p | " + " | ".join(f"{p:g}" for p in PS) + " |")
    print("|---|" + "---|" * len(PS))
    for s in SIGMAS:
        print(f"| {s:g} | " + " | ".join(f"{table[(s, p)]:.0f}" for p in PS) + " |")


def build_env(name: str, experts: Path, args: argparse.Namespace) -> None:
    env_id, stem = ENVS[name]
    policy = ExpertMLP(experts / f"{stem}.pkl")
    start = time.perf_counter()
    table = calibrate(env_id, policy, args.sweep_episodes)
    print_sweep(name, table)
    expert_return = table[EXPERT]
    target = args.medium_fraction * expert_return
    degraded = {k: v for k, v in table.items() if k != (0.0, 1.0)}
    medium = min(degraded, key=lambda k: abs(degraded[k] - target))
    # The replay ladder: every setting from random up to medium's quality, equal steps each.
    # (Up to 15% above medium's mean: a learner's buffer near the end holds policies on both sides.)
    ladder = sorted([k for k, v in table.items() if v <= table[medium] * 1.15], key=table.__getitem__)
    print(
        f"\nexpert = sigma {EXPERT[0]}, p {EXPERT[1]} ({expert_return:.0f}); medium = sigma {medium[0]}, "
        f"p {medium[1]} ({table[medium]:.0f}, target {target:.0f}); medium-replay ladder: "
        + ", ".join(f"({s:g}, {p:g}) {table[(s, p)]:.0f}" for s, p in ladder)
        + f"  [sweep {time.perf_counter() - start:.0f} s]"
    )
    steps = args.steps
    ref = D4RL_REFERENCE[name]
    # medium-replay holds no expert episode: none at or above --replay-cap (D4RL-normalised).
    replay_cap = ref[0] + args.replay_cap / 100 * (ref[1] - ref[0])
    plan = {
        "random": lambda: rollout_steps(env_id, policy, steps // 2, _SEED_BASE["random"], 0.0, 1.0),
        "medium": lambda: rollout_steps(env_id, policy, steps, _SEED_BASE["medium"], *medium),
        "expert": lambda: rollout_steps(env_id, policy, steps, _SEED_BASE["expert"], *EXPERT),
        "medium-replay": lambda: [
            ep
            for i, setting in enumerate(ladder)
            for ep in rollout_steps(
                env_id,
                policy,
                steps // len(ladder),
                _SEED_BASE["medium-replay"] + 10_000 * i,
                *setting,
                max_return=replay_cap,
            )
        ],
    }
    made: dict[str, list[Episode]] = {}
    for kind in ("random", "medium", "medium-replay", "expert", "medium-expert"):
        dataset_id = f"d4rlstyle/{name}/{kind}-v0"
        if is_stored(dataset_id) and not args.overwrite:
            made[kind] = load_offline_dataset(dataset_id).episodes
            continue
        if kind == "medium-expert":
            # D4RL concatenates the two datasets; we take the first half (in steps) of each.
            episodes = _prefix(made["medium"], steps // 2) + _prefix(made["expert"], steps // 2)
        else:
            episodes = plan[kind]()
        made[kind] = episodes
        for i, ep in enumerate(episodes):
            ep.id = i
        write_dataset(
            dataset_id,
            episodes,
            env_id,
            ref_min_score=ref[0],
            ref_max_score=ref[1],
            description=f"{env_id}, {kind}: expert MLP degraded by action noise / random actions (D4RL-style)",
            algorithm_name=f"expert MLP, {kind} behaviour",
            overwrite=args.overwrite,
        )
        print(f"wrote {dataset_id} [{time.perf_counter() - start:.0f} s]")


def _prefix(episodes: list[Episode], steps: int) -> list[Episode]:
    """The first episodes up to at least ``steps`` steps, as copies (ids are renumbered)."""
    out, total = [], 0
    for ep in episodes:
        if total >= steps:
            break
        out.append(dataclasses.replace(ep))
        total += ep.length
    return out


def dataset_table(names: list[str]) -> str:
    rows = [
        "| dataset | episodes | steps | return mean | min | max | normalised mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        for kind in NAMES:
            dataset_id = f"d4rlstyle/{name}/{kind}-v0"
            if not is_stored(dataset_id):
                continue
            data = load_offline_dataset(dataset_id)
            rets = np.array([ep.total_return for ep in data.episodes])
            norm = normalized_score(float(rets.mean()), data.ref_min_score, data.ref_max_score)
            rows.append(
                f"| {dataset_id} | {len(rets)} | {data.num_steps} | {rets.mean():.0f} | {rets.min():.0f} | "
                f"{rets.max():.0f} | {norm:.1f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--experts", type=Path, required=True, help="directory with Hopper.pkl, Walker2d.pkl, ..."
    )
    parser.add_argument("--env", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument(
        "--steps", type=int, default=200_000, help="steps of medium, expert and medium-replay"
    )
    parser.add_argument("--sweep-episodes", type=int, default=5, help="episodes per sweep setting")
    parser.add_argument("--medium-fraction", type=float, default=0.4, help="medium's mean return / expert's")
    parser.add_argument(
        "--replay-cap",
        type=float,
        default=100.0,
        help="medium-replay keeps only episodes below this D4RL-normalised return (100: the expert reference)",
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--table-only", action="store_true", help="only print the table of stored datasets")
    args = parser.parse_args(argv)
    if not args.table_only:
        for name in args.env:
            build_env(name, args.experts, args)
    print("\n## Datasets\n\n" + dataset_table(args.env))


if __name__ == "__main__":
    main()
