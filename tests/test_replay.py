"""Episodic replay: window shapes, padding masks, alignment of next observations, capacity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_seqrl.data.replay import EpisodeRecorder, EpisodicReplay


def make_episode(ep_id: int, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations encode (episode id, step), so windows can be traced back."""
    obs = np.stack([np.full(T + 1, ep_id, dtype=np.float32), np.arange(T + 1, dtype=np.float32)], axis=1)
    return obs, np.arange(T, dtype=np.int64) % 3, np.arange(T, dtype=np.float32) / 10


def test_window_shapes_masks_and_alignment() -> None:
    buf = EpisodicReplay(capacity=1_000, obs_dim=2, seed=0)
    lengths = {0: 3, 1: 10, 2: 1}
    for ep_id, T in lengths.items():
        buf.add_episode(*make_episode(ep_id, T), terminated=ep_id != 1)
    assert len(buf) == 14 and buf.num_episodes == 3
    batch = buf.sample(64, context_len=5)
    B, L = batch["mask"].shape
    assert B == 64 and L == 5
    assert batch["obs"].shape == batch["next_obs"].shape == (64, 5, 2)
    assert batch["actions"].dtype == torch.int64 and batch["mask"].dtype == torch.bool
    for b in range(B):
        ep_id, n = int(batch["obs"][b, 0, 0]), int(batch["mask"][b].sum())
        assert n == min(5, lengths[ep_id]), "a window covers min(K, T) steps"
        assert batch["mask"][b, :n].all() and not batch["mask"][b, n:].any(), "padding is on the right"
        steps = batch["obs"][b, :n, 1]
        torch.testing.assert_close(steps, steps[0] + torch.arange(n, dtype=torch.float32))  # consecutive
        torch.testing.assert_close(batch["next_obs"][b, :n, 1], steps + 1)  # next_obs = obs shifted by one
        torch.testing.assert_close(batch["rewards"][b, :n], steps / 10)
        assert (batch["obs"][b, n:] == 0).all() and (batch["rewards"][b, n:] == 0).all()
        # done only at the real last step of a terminated episode
        last_step = int(steps[-1]) == lengths[ep_id] - 1
        expect = torch.zeros(L)
        if ep_id != 1 and last_step:
            expect[n - 1] = 1.0
        torch.testing.assert_close(batch["dones"][b], expect)


def test_sampling_pads_to_longest_window_or_context_and_is_seeded() -> None:
    buf = EpisodicReplay(capacity=100, obs_dim=2, seed=1)
    buf.add_episode(*make_episode(0, 2), terminated=True)
    assert buf.sample(4, context_len=50)["obs"].shape[1] == 2
    assert buf.sample(4, context_len=50, pad_to_context=True)["obs"].shape[1] == 50

    def filled(seed: int) -> EpisodicReplay:
        b = EpisodicReplay(capacity=100, obs_dim=2, seed=seed)
        b.add_episode(*make_episode(0, 2), terminated=True)
        b.add_episode(*make_episode(1, 30), terminated=True)
        return b

    x, y, z = filled(1).sample(16, 4), filled(1).sample(16, 4), filled(2).sample(16, 4)
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(x["obs"], z["obs"])


def test_capacity_evicts_oldest_whole_episodes() -> None:
    buf = EpisodicReplay(capacity=25, obs_dim=2, seed=0)
    for ep_id in range(10):
        buf.add_episode(*make_episode(ep_id, 6), terminated=True)
        assert len(buf) <= 25
    assert len(buf) == 24 and buf.num_episodes == 4
    kept = {int(v) for v in buf.sample(200, 6)["obs"][:, 0, 0]}
    assert kept == {6, 7, 8, 9}
    buf.add_episode(*make_episode(99, 40), terminated=True)  # longer than the whole buffer
    assert len(buf) == 25 and buf.num_episodes == 1
    assert int(buf.sample(8, 50, pad_to_context=True)["obs"][:, :, 1].max()) == 39  # its last steps kept


def test_state_dict_restores_episodes_and_sampler(tmp_path) -> None:
    buf = EpisodicReplay(capacity=25, obs_dim=2, seed=3)
    for ep_id in range(6):  # the first two are evicted: ids 2..5 stay
        buf.add_episode(*make_episode(ep_id, 6), terminated=ep_id % 2 == 0)
    buf.sample(5, 4)  # move the sampler on before saving
    path = tmp_path / "replay.pt"
    torch.save(buf.state_dict(), path)
    state = torch.load(path, weights_only=True)  # a checkpoint's safe loading accepts it

    copy = EpisodicReplay(capacity=25, obs_dim=2, seed=99)
    copy.load_state_dict(state)
    assert (len(copy), copy.num_episodes) == (len(buf), buf.num_episodes) == (24, 4)
    a, b = buf.sample(32, 6), copy.sample(32, 6)  # same windows: contents, order and sampler state
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert {int(v) for v in b["obs"][:, 0, 0]} == {2, 3, 4, 5}
    assert b["dones"].sum(1).tolist() == a["dones"].sum(1).tolist()  # terminated flags kept
    buf.add_episode(*make_episode(6, 2), terminated=True)
    copy.add_episode(*make_episode(6, 2), terminated=True)
    assert [e.id for e in copy._episodes] == [e.id for e in buf._episodes]  # ids continue alike

    empty = EpisodicReplay(capacity=5, obs_dim=2)
    empty.load_state_dict(EpisodicReplay(capacity=5, obs_dim=2).state_dict())
    assert len(empty) == 0
    with pytest.raises(ValueError, match="width 2"):
        EpisodicReplay(capacity=25, obs_dim=3).load_state_dict(state)


def test_bad_input_and_empty_buffer() -> None:
    buf = EpisodicReplay(capacity=10, obs_dim=2)
    with pytest.raises(RuntimeError):
        buf.sample(1, 1)
    obs, actions, rewards = make_episode(0, 3)
    with pytest.raises(ValueError):
        buf.add_episode(obs[:-1], actions, rewards, True)


def test_recorder_stores_finished_episodes_and_chunks_long_ones() -> None:
    buf = EpisodicReplay(capacity=100, obs_dim=2, seed=0)
    rec = EpisodeRecorder(buf, num_envs=2, max_chunk=4)
    with pytest.raises(RuntimeError):
        rec.record(0, 0, 0.0, np.zeros(2), False, False)
    rec.begin(0, np.zeros(2))
    rec.begin(1, np.zeros(2))
    for t in range(3):
        rec.record(0, 1, 1.0, np.full(2, t + 1.0), terminated=t == 2, truncated=False)
    assert len(buf) == 3 and buf.num_episodes == 1
    for t in range(9):  # never ends: stored in chunks of 4 steps
        rec.record(1, 2, 0.0, np.full(2, t + 1.0), terminated=False, truncated=False)
    assert len(buf) == 3 + 8 and buf.num_episodes == 3
    batch = buf.sample(32, 10)
    assert batch["dones"].sum() > 0  # only episode 0 can be done
    assert bool((batch["dones"][batch["actions"] == 2] == 0).all()), "chunks are never terminal"


class ScriptedActor:
    """Always the same action; remembers which rows it was told to reset."""

    def __init__(self, action: int) -> None:
        self.action, self.resets = action, []

    def reset(self, rows: np.ndarray) -> None:
        self.resets.append(rows.tolist())

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.full(len(obs), self.action)

    def observe(self, rewards: np.ndarray) -> None:
        pass


def test_collector_stores_whole_episodes_and_resets_finished_rows() -> None:
    from lit_seqrl.data.online import EnvCollector
    from lit_seqrl.envs import CountingHallwayEnv

    def run(seed: int) -> tuple[EpisodicReplay, ScriptedActor, EnvCollector]:
        buf = EpisodicReplay(capacity=1_000, obs_dim=6, seed=0)
        actor = ScriptedActor(action=0)  # walk left: never opens the door, truncated after 5 steps
        collector = EnvCollector(lambda: CountingHallwayEnv(length=6, max_steps=5), 2, buf, seed=seed)
        for _ in range(12):
            collector.step(actor, epsilon=0.0)
        return buf, actor, collector

    buf, actor, collector = run(seed=0)
    assert collector.env_steps == 24 and buf.num_episodes == 4 and len(buf) == 20
    assert actor.resets == [[True, True], [True, True], [True, True]]  # start, after steps 5 and 10
    stats = collector.pop_finished()
    assert [s["length"] for s in stats] == [5.0] * 4 and all(s["success"] == 0.0 for s in stats)
    assert collector.pop_finished() == []
    batch = buf.sample(16, 5)
    assert batch["mask"].all() and (batch["dones"] == 0).all(), "truncated episodes are not terminal"
    assert (batch["actions"] == 0).all()
    again, _, _ = run(seed=0)
    assert [e.observations.tolist() for e in again._episodes] == [
        e.observations.tolist() for e in buf._episodes
    ]
