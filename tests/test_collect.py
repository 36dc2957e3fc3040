"""Scripted controllers, default-dataset generation, minari round trip and loader errors."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import minari
import numpy as np
import pytest

from lit_seqrl.data import collect
from lit_seqrl.data.collect import (
    DEFAULT_DATASETS,
    DefaultDatasetSpec,
    collect_dataset,
    ensure_dataset,
    rollout_policy,
    write_dataset,
)
from lit_seqrl.data.controllers import CartPoleController, PendulumController
from lit_seqrl.data.episodes import describe_dataset, load_offline_dataset
from lit_seqrl.data.paths import DatasetNotFoundError, datasets_root

PENDULUM = "lit_seqrl/pendulum/mixed-v0"
CARTPOLE = "lit_seqrl/cartpole/mixed-v0"


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A fresh, empty datasets directory per test (minari reads the variable at call time)."""
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def mean_return(episodes) -> float:
    return float(np.mean([ep.total_return for ep in episodes]))


def test_controller_returns_are_in_documented_ranges():
    expert = rollout_policy("Pendulum-v1", PendulumController(), num_episodes=10, seed=0)
    random = rollout_policy("Pendulum-v1", PendulumController(), num_episodes=10, seed=0, epsilon=1.0)
    assert mean_return(expert) > -250
    assert mean_return(random) < -800
    assert all(ep.length == 200 and ep.truncated and not ep.terminated for ep in expert)

    cart = rollout_policy("CartPole-v1", CartPoleController(), num_episodes=3, seed=0)
    assert [ep.total_return for ep in cart] == [500.0, 500.0, 500.0]
    cart_random = rollout_policy("CartPole-v1", CartPoleController(), num_episodes=10, seed=0, epsilon=1.0)
    assert mean_return(cart_random) < 50
    assert all(ep.terminated for ep in cart_random)
    assert cart_random[0].actions.dtype == np.int64 and cart_random[0].actions.ndim == 1


def test_rollouts_are_seeded():
    a = rollout_policy("Pendulum-v1", PendulumController(), 2, seed=5, action_noise=0.3, epsilon=0.2)
    b = rollout_policy("Pendulum-v1", PendulumController(), 2, seed=5, action_noise=0.3, epsilon=0.2)
    assert all(np.array_equal(x.actions, y.actions) for x, y in zip(a, b))
    c = rollout_policy("Pendulum-v1", PendulumController(), 2, seed=6, action_noise=0.3, epsilon=0.2)
    assert not np.array_equal(a[0].observations, c[0].observations)


def test_tiny_pendulum_dataset_round_trips(root):
    data = collect_dataset(PENDULUM, num_episodes=3, progress=False)
    assert (root / PENDULUM / "data").is_dir()
    assert data.dataset_id == PENDULUM and data.env_id == "Pendulum-v1"
    assert len(data.episodes) == 3 and data.num_steps == 600
    assert (data.obs_dim, data.act_dim, data.discrete) == (3, 1, False)
    ep = data.episodes[2]  # order: random, medium, expert
    assert ep.observations.shape == (200, 3) and ep.observations.dtype == np.float32
    assert ep.actions.shape == (200, 1) and ep.actions.dtype == np.float32
    assert ep.rewards.shape == (200,) and ep.rewards.dtype == np.float32
    assert ep.final_observation.shape == (3,)
    assert ep.truncated and not ep.terminated and [e.id for e in data.episodes] == [0, 1, 2]
    # Exactly what the expert controller does from the documented seed.
    direct = rollout_policy("Pendulum-v1", PendulumController(), 1, seed=2 * collect._SEED_STRIDE)[0]
    np.testing.assert_array_equal(ep.observations, direct.observations)
    np.testing.assert_array_equal(ep.actions, direct.actions)
    assert data.ref_min_score == pytest.approx(data.episodes[0].total_return, rel=1e-5)
    assert data.ref_max_score == pytest.approx(ep.total_return, rel=1e-5)

    info = describe_dataset(PENDULUM)
    assert info.exists and info.ref_max_score == pytest.approx(data.ref_max_score)
    by_path = load_offline_dataset(str(root / PENDULUM))
    assert len(by_path.episodes) == 3 and by_path.env_id == "Pendulum-v1"
    assert len(load_offline_dataset(str(root / PENDULUM / "data")).episodes) == 3
    assert PENDULUM in minari.list_local_datasets()
    ensure_dataset(PENDULUM)  # present: no-op, still 3 episodes
    assert len(load_offline_dataset(PENDULUM).episodes) == 3


def test_tiny_cartpole_dataset_is_discrete(root):
    data = collect_dataset(CARTPOLE, num_episodes=3, progress=False)
    assert (data.obs_dim, data.act_dim, data.discrete) == (4, 2, True)
    ep = data.episodes[0]
    assert ep.actions.dtype == np.int64 and ep.actions.shape == (ep.length,)
    assert ep.terminated  # the random episode drops the pole
    assert data.ref_max_score == 500.0 and data.ref_min_score < 100


def test_missing_datasets_say_how_to_get_them(root):
    with pytest.raises(DatasetNotFoundError, match=f"lit-seqrl data collect {PENDULUM}"):
        load_offline_dataset(PENDULUM)
    with pytest.raises(DatasetNotFoundError, match="minari download someone/thing-v0"):
        load_offline_dataset("someone/thing-v0")
    with pytest.raises(DatasetNotFoundError, match="minari download"):
        ensure_dataset("someone/thing-v0")
    with pytest.raises(FileNotFoundError):  # it is a FileNotFoundError too
        describe_dataset("someone/thing-v0")
    info = describe_dataset(CARTPOLE)  # a default not generated yet: dims from the env
    assert not info.exists and (info.obs_dim, info.act_dim, info.discrete) == (4, 2, True)
    assert info.env_id == "CartPole-v1" and info.ref_max_score is None


def test_ensure_dataset_generates_a_missing_default(root, monkeypatch):
    tiny = DefaultDatasetSpec("Pendulum-v1", {"random": 1, "expert": 1}, seed=0, description="tiny")
    monkeypatch.setitem(DEFAULT_DATASETS, "lit_seqrl/test/tiny-v0", tiny)
    ensure_dataset("lit_seqrl/test/tiny-v0", progress=False)
    assert len(load_offline_dataset("lit_seqrl/test/tiny-v0").episodes) == 2


def test_non_finite_values_name_the_episode(root):
    episodes = rollout_policy("Pendulum-v1", PendulumController(), 3, seed=0, max_episode_steps=10)
    episodes[1].observations[4, 2] = np.nan
    write_dataset("test/nan-v0", episodes, "Pendulum-v1")
    with pytest.raises(ValueError, match=r"episode 1 .*observations"):
        load_offline_dataset("test/nan-v0")
    with pytest.raises(FileExistsError):
        write_dataset("test/nan-v0", episodes, "Pendulum-v1")


def test_interrupted_generation_leaves_nothing_loadable(root, monkeypatch):
    real_create = minari.create_dataset_from_buffers

    def create_then_die(*args, **kwargs):
        real_create(*args, **kwargs)  # the whole dataset is written (to staging) ...
        raise KeyboardInterrupt  # ... and then the process is interrupted

    monkeypatch.setattr(minari, "create_dataset_from_buffers", create_then_die)
    with pytest.raises(KeyboardInterrupt):
        collect_dataset(PENDULUM, num_episodes=2, progress=False)
    with pytest.raises(DatasetNotFoundError):
        load_offline_dataset(PENDULUM)
    assert minari.list_local_datasets() == {}
    assert not list(root.glob(".lit_seqrl-staging*"))

    def die_during_rollout(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(collect, "rollout_policy", die_during_rollout)
    with pytest.raises(RuntimeError):
        collect_dataset(PENDULUM, num_episodes=2, progress=False)
    assert minari.list_local_datasets() == {}

    monkeypatch.undo()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    assert len(collect_dataset(PENDULUM, num_episodes=2, progress=False).episodes) == 2  # lock released


def test_overwrite_replaces(root):
    collect_dataset(PENDULUM, num_episodes=2, progress=False)
    assert len(collect_dataset(PENDULUM, num_episodes=3, progress=False).episodes) == 2  # kept
    assert len(collect_dataset(PENDULUM, num_episodes=3, overwrite=True, progress=False).episodes) == 3
    assert not list(root.glob(".lit_seqrl-trash*"))


def _collect_and_report(queue, barrier, datasets_path: str) -> None:
    os.environ["MINARI_DATASETS_PATH"] = datasets_path
    rollout = collect._rollout_quality

    def slow_logged_rollout(*args, **kwargs):
        # Log which process generates, and hold the race window open for a second.
        with open(Path(datasets_path).parent / "generators.log", "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return rollout(*args, **kwargs)

    collect._rollout_quality = slow_logged_rollout
    try:
        barrier.wait(timeout=600)  # both processes have imported everything: start together
        data = collect_dataset(CARTPOLE, num_episodes=3, progress=False)
        queue.put((len(data.episodes), os.stat(datasets_root() / CARTPOLE).st_ino))
    except BaseException as err:  # report instead of dying silently, so the test fails fast
        queue.put(("error", repr(err)))


def test_concurrent_generation_happens_once(root):
    # Two processes generate the same id at once. Each logs when it generates and reports the
    # dataset directory's inode after it returns: one generator and equal inodes mean the second
    # waited on the lock and then loaded the first one's result. Spawned, not forked: forking a process whose torch
    # threads are running can deadlock the child. The timeouts only guard against a hang; a
    # loaded machine needs many seconds to start two interpreters that import torch.
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(2)
    procs = [ctx.Process(target=_collect_and_report, args=(queue, barrier, str(root))) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), results
    assert results[0] == results[1] and results[0][0] == 3, results
    generators = set((root.parent / "generators.log").read_text().split())
    assert len(generators) == 1, "both processes generated the dataset"
    assert list(minari.list_local_datasets()) == [CARTPOLE]
