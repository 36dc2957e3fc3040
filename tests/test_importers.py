"""`lit-seqrl data import`: D4RL-style HDF5 and pickled trajectories into minari datasets."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from lit_seqrl.cli import main
from lit_seqrl.data.episodes import load_offline_dataset
from lit_seqrl.data.importers import import_dataset, read_episodes
from tests.helpers import SHARED_DATA, flat, write_hdf5

HOPPER_PICKLE = SHARED_DATA / "cs285_experts" / "expert_data_Hopper-v4.pkl"


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A fresh, empty datasets directory per test (minari reads the variable at call time)."""
    path = tmp_path / "datasets"
    path.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def write_pickle(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def nothing_left_behind(root: Path) -> bool:
    """Only lock files (and namespace markers) may remain after a failed import."""
    leftovers = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith((".lock", ".json"))]
    return not leftovers and not list(root.glob(".lit_seqrl-staging*"))


def test_hdf5_round_trip_splits_on_terminals_and_timeouts(root, tmp_path):
    arrays = flat()
    path = write_hdf5(tmp_path / "d4rl.hdf5", arrays)
    summary = import_dataset(path, "test/pendulum/d4rl-v0", "Pendulum-v1")
    assert (summary.episodes, summary.steps, summary.terminated, summary.truncated) == (4, 23, 1, 3)

    data = load_offline_dataset("test/pendulum/d4rl-v0")
    assert data.env_id == "Pendulum-v1"
    assert data.action_space == gym.make("Pendulum-v1").action_space  # the env's own bounds
    assert [ep.length for ep in data.episodes] == [5, 5, 6, 7]
    assert [(ep.terminated, ep.truncated) for ep in data.episodes] == [
        (True, False),
        (False, True),
        (False, True),
        (False, True),  # the trailing unfinished episode
    ]
    start = 0
    for ep in data.episodes:
        stop = start + ep.length
        np.testing.assert_array_equal(ep.observations, arrays["observations"][start:stop].astype(np.float32))
        np.testing.assert_array_equal(ep.actions, arrays["actions"][start:stop])
        np.testing.assert_array_equal(ep.rewards, arrays["rewards"][start:stop].astype(np.float32))
        np.testing.assert_array_equal(
            ep.final_observation, arrays["next_observations"][stop - 1].astype(np.float32)
        )
        start = stop


def test_hdf5_without_timeouts_or_next_observations(root, tmp_path):
    arrays = flat()
    del arrays["timeouts"], arrays["next_observations"]
    import_dataset(write_hdf5(tmp_path / "old.h5", arrays), "test/pendulum/old-v0", "Pendulum-v1")
    data = load_offline_dataset("test/pendulum/old-v0")
    assert [ep.length for ep in data.episodes] == [5, 18]
    last = data.episodes[-1]
    np.testing.assert_array_equal(last.final_observation, last.observations[-1])  # unknown: repeated


@pytest.mark.parametrize(
    "spelling",
    [
        # cs285 expert data
        {"observations": "observation", "actions": "action", "rewards": "reward", "terminals": "terminal"},
        # the Decision Transformer's D4RL pickles
        {
            "observations": "observations",
            "actions": "actions",
            "rewards": "rewards",
            "terminals": "terminals",
        },
        {"observations": "obs", "actions": "actions", "rewards": "reward", "terminals": "dones"},
    ],
    ids=["singular", "plural", "dones"],
)
def test_pickled_trajectories_with_key_spellings(root, tmp_path, spelling):
    rng = np.random.default_rng(1)
    lengths, trajectories = [7, 4, 9], []
    for i, n in enumerate(lengths):
        terminal = np.zeros(n, bool)
        terminal[-1] = i == 1  # trajectories 0 and 2 were cut by a time limit
        traj = {
            "observations": rng.standard_normal((n, 3)),
            "actions": rng.uniform(-2, 2, (n, 1)),
            "rewards": rng.standard_normal((n, 1)),  # (N, 1), as some pickles store them
            "terminals": terminal,
        }
        trajectories.append({spelling[k]: v for k, v in traj.items()})
    path = write_pickle(tmp_path / "trajs.pkl", trajectories)
    import_dataset(path, "test/pendulum/pkl-v0", "Pendulum-v1")

    data = load_offline_dataset("test/pendulum/pkl-v0")
    assert [ep.length for ep in data.episodes] == lengths
    assert [(ep.terminated, ep.truncated) for ep in data.episodes] == [
        (False, True),
        (True, False),
        (False, True),
    ]
    for ep, traj in zip(data.episodes, trajectories):
        np.testing.assert_array_equal(ep.observations, traj[spelling["observations"]].astype(np.float32))
        np.testing.assert_array_equal(ep.rewards, traj[spelling["rewards"]][:, 0].astype(np.float32))


def test_terminal_inside_a_trajectory_splits_it_and_discrete_actions(root, tmp_path):
    done = np.zeros(10, bool)
    done[3] = True
    traj = {"observation": np.ones((10, 4)), "action": np.arange(10) % 2, "reward": np.ones(10), "done": done}
    import_dataset(write_pickle(tmp_path / "cart.pkl", [traj]), "test/cartpole/pkl-v0", "CartPole-v1")
    data = load_offline_dataset("test/cartpole/pkl-v0")
    assert data.discrete and data.action_space == gym.spaces.Discrete(2)
    assert [ep.length for ep in data.episodes] == [4, 6]
    assert data.episodes[0].actions.dtype == np.int64


def test_pickled_dict_of_flat_arrays_and_no_env(root, tmp_path):
    path = write_pickle(tmp_path / "flat.pkl", flat(obs_dim=5, act_dim=2))
    summary = import_dataset(path, "test/unknown/flat-v0")
    assert summary.env_id is None and summary.episodes == 4
    data = load_offline_dataset("test/unknown/flat-v0")
    assert data.env_id is None and data.obs_dim == 5
    # Without an env the bounds are inferred: actions within [-1, 1] get the D4RL convention.
    assert data.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def test_env_that_cannot_be_built_here_keeps_its_id(root, tmp_path, monkeypatch):
    def missing_dependency(*args, **kwargs):
        raise gym.error.DependencyNotInstalled("MuJoCo is not installed")

    arrays = flat(obs_dim=11, act_dim=3)
    arrays["actions"][0, 0] = 1.5  # outside [-1, 1]: the action bounds stay open
    with monkeypatch.context() as m, pytest.warns(RuntimeWarning, match="cannot build Hopper-v5 here"):
        m.setattr(gym, "make", missing_dependency)
        import_dataset(write_hdf5(tmp_path / "h.hdf5", arrays), "test/hopper/nomujoco-v0", "Hopper-v5")
    data = load_offline_dataset("test/hopper/nomujoco-v0")
    assert data.env_id == "Hopper-v5"
    assert data.action_space == gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)


def test_actions_outside_the_env_bounds_are_kept_with_a_warning(root, tmp_path):
    arrays = flat()
    arrays["actions"][[2, 7]] = 5.0  # Pendulum's bounds are [-2, 2]
    with pytest.warns(RuntimeWarning, match="2 of 23 steps have actions outside Pendulum-v1's bounds"):
        import_dataset(write_hdf5(tmp_path / "p.hdf5", arrays), "test/pendulum/loud-v0", "Pendulum-v1")
    assert load_offline_dataset("test/pendulum/loud-v0").episodes[0].actions[2, 0] == 5.0


def test_overwrite_replaces_an_existing_dataset(root, tmp_path):
    path = write_hdf5(tmp_path / "d.hdf5", flat())
    import_dataset(path, "test/pendulum/twice-v0", "Pendulum-v1")
    small = write_hdf5(tmp_path / "small.hdf5", flat(n=12))
    import_dataset(small, "test/pendulum/twice-v0", "Pendulum-v1", overwrite=True)
    assert load_offline_dataset("test/pendulum/twice-v0").num_steps == 12


def _bad(tmp_path: Path, case: str) -> tuple[Path, str | None, str]:
    """(file, env, expected message) for one bad-file case; {name} is the file name."""
    arrays = flat()
    if case == "missing key":
        del arrays["rewards"]
        msg = "{name}: missing key 'rewards' (accepted spellings: rewards/reward)"
    elif case == "short actions":
        arrays = flat(n=1000)
        arrays["actions"] = arrays["actions"][:999]
        msg = "{name}: actions has 999 rows but observations has 1000"
    elif case == "short terminals":
        arrays["terminals"] = arrays["terminals"][:-2]
        msg = "{name}: terminals has 21 rows but observations has 23"
    elif case == "nan reward":
        arrays["rewards"][17] = np.nan
        msg = "{name}: rewards has a non-finite value at row 17"
    elif case == "image observations":
        arrays["observations"] = np.zeros((23, 4, 4))
        msg = "{name}: observations must be (rows, features), got shape (23, 4, 4) (images are not supported)"
    elif case == "env mismatch":
        return (
            write_hdf5(tmp_path / "bad.hdf5", flat(obs_dim=11)),
            "Pendulum-v1",
            "env Pendulum-v1 has observation space Box([-1. -1. -8.], [1. 1. 8.], (3,), float32), "
            "but the file's observations have 11 features",
        )
    elif case == "unknown env":
        return (
            write_hdf5(tmp_path / "bad.hdf5", arrays),
            "Nope-v0",
            ("unknown environment 'Nope-v0': not registered with gymnasium"),
        )
    elif case == "not a list":
        return (
            write_pickle(tmp_path / "bad.pkl", 42),
            None,
            ("{name}: expected a list of trajectory dicts, got int"),
        )
    elif case == "trajectory not a dict":
        return (
            write_pickle(tmp_path / "bad.pkl", [arrays, [1, 2]]),
            None,
            ("{name}: trajectory 1 is a list, expected a dict of arrays"),
        )
    elif case == "trajectory length mismatch":
        traj = {k: v[:5] for k, v in arrays.items()}
        traj["action"] = traj.pop("actions")[:4]
        return (
            write_pickle(tmp_path / "bad.pkl", [arrays, traj]),
            None,
            ("{name}: trajectory 1: actions has 4 rows but observations has 5"),
        )
    elif case == "mixed observation sizes":
        return (
            write_pickle(tmp_path / "bad.pkl", [flat(obs_dim=3), flat(obs_dim=4)]),
            None,
            ("{name}: episode 4 has 4 observation features, episode 0 has 3"),
        )
    elif case == "not hdf5 nor pickle":
        path = tmp_path / "bad.txt"
        path.write_text("observations,actions\n1,2\n")
        return (
            path,
            None,
            ("{name}: neither an HDF5 file nor a readable pickle (UnpicklingError: could not find MARK)"),
        )
    elif case == "empty":
        arrays = {k: v[:0] for k, v in arrays.items()}
        msg = "{name}: observations has no rows"
    else:  # pragma: no cover
        raise AssertionError(case)
    return write_hdf5(tmp_path / "bad.hdf5", arrays), None, msg


BAD_CASES = [
    "missing key",
    "short actions",
    "short terminals",
    "nan reward",
    "image observations",
    "env mismatch",
    "unknown env",
    "not a list",
    "trajectory not a dict",
    "trajectory length mismatch",
    "mixed observation sizes",
    "not hdf5 nor pickle",
    "empty",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_give_one_line_errors_and_write_nothing(root, tmp_path, case):
    path, env, message = _bad(tmp_path, case)
    with pytest.raises(ValueError) as info:
        import_dataset(path, "test/bad/data-v0", env)
    assert str(info.value) == message.format(name=path.name)
    assert "\n" not in str(info.value)
    assert nothing_left_behind(root), sorted(map(str, root.rglob("*")))


def test_missing_file_bad_id_and_existing_id(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file: "):
        read_episodes(tmp_path / "absent.hdf5")
    path = write_hdf5(tmp_path / "d.hdf5", flat())
    with pytest.raises(ValueError, match=r"^dataset id 'hopper' must look like \[namespace/\]name-vN"):
        import_dataset(path, "hopper")
    import_dataset(path, "test/pendulum/once-v0", "Pendulum-v1")
    with pytest.raises(ValueError) as info:
        import_dataset(path, "test/pendulum/once-v0", "Pendulum-v1")
    assert str(info.value) == "dataset 'test/pendulum/once-v0' already exists; pass --overwrite to replace it"


def test_cli_import_and_its_errors(root, tmp_path, capsys):
    path = write_hdf5(tmp_path / "d.hdf5", flat())
    main(["data", "import", str(path), "--id", "test/pendulum/cli-v0", "--env", "Pendulum-v1"])
    out = capsys.readouterr().out
    assert "test/pendulum/cli-v0: 4 episodes (1 terminated, 3 truncated), 23 steps, env Pendulum-v1" in out
    with pytest.raises(SystemExit) as info:
        main(["data", "import", str(tmp_path / "absent.pkl"), "--id", "test/pendulum/cli-v0"])
    assert info.value.code == f"lit-seqrl data: error: no such file: {tmp_path / 'absent.pkl'}"


@pytest.mark.skipif(not HOPPER_PICKLE.is_file(), reason="real D4RL-style pickle not available")
def test_real_hopper_expert_pickle(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MuJoCo may be missing here; Hopper-v4 is deprecated
        summary = import_dataset(os.fspath(HOPPER_PICKLE), "test/hopper/expert-v0", "Hopper-v4")
    assert (summary.episodes, summary.steps) == (2, 2000)
    data = load_offline_dataset("test/hopper/expert-v0")
    assert data.env_id == "Hopper-v4" and data.obs_dim == 11 and data.act_dim == 3
    assert [ep.length for ep in data.episodes] == [1000, 1000]
    assert all(3600 < ep.total_return < 3800 for ep in data.episodes)
