"""Return-to-go, window sampling/padding and episode utilities (pure numpy/torch, no files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lit_seqrl.data.episodes import Episode
from lit_seqrl.data.windows import (
    TrajectoryWindows,
    collate_windows,
    delay_rewards,
    observation_stats,
    returns_to_go,
    split_episodes,
)


def make_episode(length: int, ep_id: int = 0, *, obs_dim: int = 2, act_dim: int = 1, discrete: bool = False):
    """Observations encode (episode, step) so a window row can be traced back to its source."""
    steps = np.arange(length, dtype=np.float32)
    obs = np.stack([np.full(length, ep_id, np.float32), steps] + [steps * 0] * (obs_dim - 2), axis=1)
    if discrete:
        actions = (np.arange(length) % 3).astype(np.int64)
    else:
        actions = np.tile(steps[:, None] / 10.0, (1, act_dim)).astype(np.float32)
    rewards = (steps + 1.0).astype(np.float32)
    return Episode(obs, actions, rewards, terminated=True, truncated=False, id=ep_id)


def test_returns_to_go_hand_computed():
    r = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    np.testing.assert_allclose(returns_to_go(r), [10.0, 9.0, 7.0, 4.0])
    # gamma 0.9: 4; 3 + 0.9*4 = 6.6; 2 + 0.9*6.6 = 7.94; 1 + 0.9*7.94 = 8.146
    np.testing.assert_allclose(returns_to_go(r, gamma=0.9), [8.146, 7.94, 6.6, 4.0], rtol=1e-6)
    assert returns_to_go(r).dtype == np.float32
    delayed = delay_rewards(r)
    np.testing.assert_array_equal(delayed, [0.0, 0.0, 0.0, 10.0])
    np.testing.assert_allclose(returns_to_go(delayed), [10.0, 10.0, 10.0, 10.0])
    assert returns_to_go(np.zeros(0)).shape == (0,)


def test_window_at_episode_start_is_left_padded_exactly():
    ep = make_episode(3)  # rewards 1, 2, 3 -> RTG 6, 5, 3
    ds = TrajectoryWindows([ep], context_len=5, num_windows=4, reward_scale=0.5, start_at_episode_start=True)
    item = ds[0]
    assert item["mask"].tolist() == [False, False, True, True, True]
    assert item["timesteps"].tolist() == [0, 0, 0, 1, 2]
    assert item["timesteps"].dtype == torch.int64
    expected_obs = np.zeros((5, 2), np.float32)
    expected_obs[2:] = ep.observations
    np.testing.assert_array_equal(item["observations"].numpy(), expected_obs)
    np.testing.assert_array_equal(item["actions"].numpy(), np.float32([[0.0], [0.0], [0.0], [0.1], [0.2]]))
    np.testing.assert_allclose(item["returns_to_go"].numpy()[:, 0], [0, 0, 3.0, 2.5, 1.5])
    np.testing.assert_allclose(item["rewards"].numpy()[:, 0], [0, 0, 0.5, 1.0, 1.5])
    assert item["returns_to_go"].shape == (5, 1) and item["rewards"].shape == (5, 1)
    assert item["observations"].dtype == torch.float32 and item["mask"].dtype == torch.bool


def rtg_by_definition(rewards, gamma):
    """R_t = Σ_{k>=t} γ^(k-t) r_k, a double sum in Python floats (no helper of the code under test)."""
    r = [float(x) for x in rewards]
    return np.array([sum(gamma ** (k - t) * r[k] for k in range(t, len(r))) for t in range(len(r))])


def delayed_by_definition(rewards):
    """The DT paper's delayed reward: 0 at every step, the episode's return at the last one."""
    return np.array([0.0] * (len(rewards) - 1) + [float(sum(float(x) for x in rewards))])


def reference_window(episodes, start_ep, start_step, k, gamma, delayed, scale):
    """Slow, obvious construction of one window for comparison."""
    ep = episodes[start_ep]
    rewards = delayed_by_definition(ep.rewards) if delayed else np.asarray(ep.rewards, np.float64)
    rtg = rtg_by_definition(rewards, gamma) * scale
    stop = min(start_step + k, ep.length)
    n, pad = stop - start_step, k - (stop - start_step)
    out = {
        "observations": np.zeros((k, ep.observations.shape[1]), np.float32),
        "actions": np.zeros((k, *ep.actions.shape[1:]), ep.actions.dtype),
        "returns_to_go": np.zeros((k, 1), np.float32),
        "rewards": np.zeros((k, 1), np.float32),
        "timesteps": np.zeros(k, np.int64),
        "mask": np.zeros(k, bool),
    }
    out["observations"][pad:] = ep.observations[start_step:stop]
    out["actions"][pad:] = ep.actions[start_step:stop]
    out["returns_to_go"][pad:, 0] = rtg[start_step:stop]
    out["rewards"][pad:, 0] = rewards[start_step:stop] * scale
    out["timesteps"][pad:] = np.arange(start_step, stop)
    out["mask"][pad:] = True
    assert n >= 1
    return out


@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize(("gamma", "delayed"), [(1.0, False), (0.9, False), (1.0, True)])
def test_windows_match_reference(discrete, gamma, delayed):
    episodes = [make_episode(n, i, discrete=discrete) for i, n in enumerate([1, 7, 25, 4])]
    k = 6
    ds = TrajectoryWindows(
        episodes, k, num_windows=300, gamma=gamma, delayed_reward=delayed, reward_scale=0.1, seed=3
    )
    batch = ds.__getitems__(list(range(300)))
    for i in range(300):
        start = int(ds.starts([i])[0])
        mask = batch["mask"][i].numpy()
        first = batch["observations"][i, int(np.argmax(mask))].numpy()
        ep_id, step = int(first[0]), int(first[1])
        assert episodes[ep_id].length > step  # the first real row is the drawn start
        assert start == sum(e.length for e in episodes[:ep_id]) + step
        ref = reference_window(episodes, ep_id, step, k, gamma, delayed, 0.1)
        for key, value in ref.items():
            np.testing.assert_allclose(batch[key][i].numpy(), value, rtol=1e-6, err_msg=key)
    if discrete:
        assert batch["actions"].dtype == torch.int64 and batch["actions"].shape == (300, k)
    else:
        assert batch["actions"].dtype == torch.float32 and batch["actions"].shape == (300, k, 1)


@pytest.mark.parametrize("at_start", [False, True])
def test_episodes_are_drawn_proportional_to_length(at_start):
    episodes = [make_episode(10, 0), make_episode(30, 1)]
    n = 4000
    ds = TrajectoryWindows(episodes, 4, n, seed=7, start_at_episode_start=at_start)
    batch = ds.__getitems__(list(range(n)))
    last_real = batch["observations"][:, -1]  # the last row is always real (left padding)
    from_short = int((last_real[:, 0] == 0).sum())
    # Binomial(4000, 0.25): sd 27.4, so 5 sd is 137.
    assert abs(from_short - 0.25 * n) < 5 * np.sqrt(n * 0.25 * 0.75)
    starts = ds.starts(np.arange(n))
    if at_start:
        assert set(starts.tolist()) == {0, 10}
        assert batch["timesteps"][:, 0].eq(0).all()
    else:
        counts = np.bincount(starts, minlength=40)  # each step expected 100 times, sd ~9.9
        assert counts.min() > 100 - 50 and counts.max() < 100 + 50


def test_windows_are_deterministic_per_seed_epoch_index():
    episodes = [make_episode(n, i) for i, n in enumerate([50, 80, 20])]
    a = TrajectoryWindows(episodes, 8, 64, seed=1)
    b = TrajectoryWindows(episodes, 8, 64, seed=1)
    first = a.__getitems__(list(range(64)))
    # Order of access does not matter: item i is a function of (seed, epoch, i) only.
    for i in [63, 5, 0, 17]:
        for key in first:
            assert torch.equal(b[i][key], first[key][i])
    a.set_epoch(1)
    second = a.__getitems__(list(range(64)))
    assert (a.starts(range(64)) != b.starts(range(64))).mean() > 0.9
    assert not torch.equal(second["observations"], first["observations"])
    a.set_epoch(0)
    assert torch.equal(a.__getitems__(list(range(64)))["observations"], first["observations"])
    other_seed = TrajectoryWindows(episodes, 8, 64, seed=2)
    assert (other_seed.starts(range(64)) != b.starts(range(64))).mean() > 0.9


def test_getitems_equals_stacked_getitem_and_dataloader():
    episodes = [make_episode(n, i, discrete=True) for i, n in enumerate([3, 40, 12])]
    ds = TrajectoryWindows(episodes, 10, 32, seed=5)
    idx = [4, 0, 31, 9, 9]
    batched = ds.__getitems__(idx)
    stacked = collate_windows([ds[i] for i in idx])
    assert batched.keys() == stacked.keys()
    for key in batched:
        assert batched[key].dtype == stacked[key].dtype
        assert torch.equal(batched[key], stacked[key])
    assert collate_windows(batched) == batched  # already collated: passed through
    loader = DataLoader(ds, batch_size=8, shuffle=False, collate_fn=collate_windows)
    first = next(iter(loader))
    expected = ds.__getitems__(list(range(8)))
    assert all(torch.equal(first[k], expected[k]) for k in expected)
    assert len(list(loader)) == 4
    with pytest.raises(IndexError):
        ds[32]


def test_invalid_arguments():
    eps = [make_episode(5)]
    with pytest.raises(ValueError, match=r"context_len \(K\) must be >= 1, got 0"):
        TrajectoryWindows(eps, 0, 10)
    with pytest.raises(ValueError, match="num_windows"):
        TrajectoryWindows(eps, 4, 0)
    with pytest.raises(ValueError, match="episode"):
        TrajectoryWindows([], 4, 10)


def test_observation_stats_and_split():
    eps = [make_episode(n, i, obs_dim=3) for i, n in enumerate([4, 6, 10])]
    mean, std = observation_stats(eps)
    all_obs = np.concatenate([e.observations for e in eps]).astype(np.float64)
    np.testing.assert_allclose(mean, all_obs.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std[:2], all_obs.std(0)[:2], rtol=1e-6)
    assert std[2] == pytest.approx(1e-6)  # constant feature: floored, not zero
    assert mean.dtype == np.float32 and mean.shape == (3,)

    many = [make_episode(3, i) for i in range(20)]
    train, val = split_episodes(many, 0.2, seed=0)
    assert len(val) == 4 and len(train) == 16
    assert {e.id for e in train}.isdisjoint(e.id for e in val)
    assert [e.id for e in train] == sorted(e.id for e in train)
    again = split_episodes(many, 0.2, seed=0)
    assert [e.id for e in again[1]] == [e.id for e in val]
    assert [e.id for e in split_episodes(many, 0.2, seed=1)[1]] != [e.id for e in val]
    assert split_episodes(many, 0.0, seed=0) == (many, [])
    assert len(split_episodes(many[:2], 0.01, seed=0)[1]) == 1  # a positive fraction keeps one
    with pytest.raises(ValueError):
        split_episodes(many, 1.0, seed=0)


def splitmix64_by_definition(x: int) -> int:
    """SplitMix64's output function (Steele, Lea & Flood 2014), in Python integers mod 2^64."""
    mask = 2**64 - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


@pytest.mark.parametrize("seed", [0, 7, 2**64 + 7])
def test_window_starts_are_the_documented_counter_based_draw(seed):
    """Start of window i in epoch e: splitmix(splitmix(splitmix(seed) ^ e) ^ i) mod N, seed mod 2^64."""
    episodes = [make_episode(n, i) for i, n in enumerate([5, 9, 3])]
    ds = TrajectoryWindows(episodes, context_len=4, num_windows=50, seed=seed)
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        key = splitmix64_by_definition(splitmix64_by_definition(seed % 2**64) ^ epoch)
        expected = [splitmix64_by_definition(key ^ i) % 17 for i in range(50)]
        assert ds.starts(np.arange(50)).tolist() == expected
    with pytest.raises(IndexError, match=r"window index out of range \[0, 50\)"):
        ds.starts([50])


def test_defaults_are_undiscounted_unscaled_and_not_delayed():
    ep = make_episode(4)  # rewards 1, 2, 3, 4
    item = TrajectoryWindows([ep], context_len=4, num_windows=1, start_at_episode_start=True)[0]
    np.testing.assert_array_equal(item["returns_to_go"][:, 0].numpy(), [10.0, 9.0, 7.0, 4.0])
    np.testing.assert_array_equal(item["rewards"][:, 0].numpy(), [1.0, 2.0, 3.0, 4.0])
    assert returns_to_go(np.array([1.0, 2.0]), gamma=0.5).dtype == np.float32
    with pytest.raises(ValueError, match=r"^TrajectoryWindows needs at least one non-empty episode$"):
        TrajectoryWindows([make_episode(0)], context_len=4, num_windows=1)
