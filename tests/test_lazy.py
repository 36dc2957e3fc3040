"""Lazy offline data: windows read from the stored HDF5 file equal the in-memory ones, memory is bounded."""

from __future__ import annotations

import dataclasses
import mmap
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from lit_seqrl.data import OfflineTrajectoryDataModule
from lit_seqrl.data.episodes import Episode, load_offline_dataset
from lit_seqrl.data.lazy import (
    LazyTrajectoryWindows,
    _column,
    dataset_bytes,
    scan_offline_dataset,
    streaming_obs_stats,
)
from lit_seqrl.data.store import write_dataset
from lit_seqrl.data.windows import BlockDraws, TrajectoryWindows, draw_block_steps

# Some shorter than K (padded windows); more than 10, so id order differs from the file's name order.
LENGTHS = (3, 17, 9, 1, 30, 12, 6, 25, 4, 14, 8, 19)


def _episodes(discrete: bool) -> list[Episode]:
    rng = np.random.default_rng(5)
    obs_dim = 4 if discrete else 3
    out = []
    for i, n in enumerate(LENGTHS):
        actions = (
            rng.integers(0, 2, n).astype(np.int64)
            if discrete
            else rng.uniform(-2, 2, (n, 1)).astype(np.float32)
        )
        out.append(
            Episode(
                observations=rng.standard_normal((n, obs_dim)).astype(np.float32) * 3 + i,
                actions=actions,
                rewards=rng.standard_normal(n).astype(np.float32),
                terminated=bool(i % 2),
                truncated=not i % 2,
                id=i,
                final_observation=rng.standard_normal(obs_dim).astype(np.float32),
            )
        )
    return out


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A continuous (Pendulum-shaped) and a discrete (CartPole-shaped) dataset, plus their episodes."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("datasets")))
        cont, disc = _episodes(False), _episodes(True)
        write_dataset("test/lazy-cont-v0", cont, "Pendulum-v1")
        write_dataset("test/lazy-disc-v0", disc, "CartPole-v1")
        yield {"test/lazy-cont-v0": cont, "test/lazy-disc-v0": disc}


def _pair(dataset_id, **kwargs):
    memory = load_offline_dataset(dataset_id)
    lazy = scan_offline_dataset(dataset_id)
    cache = kwargs.pop("cache_bytes", 2**20)
    common = dict(context_len=5, num_windows=64, seed=11, **kwargs)
    return (
        TrajectoryWindows(memory.episodes, **common),
        LazyTrajectoryWindows(lazy.path, lazy.episodes, discrete=lazy.discrete, cache_bytes=cache, **common),
    )


@pytest.mark.parametrize("dataset_id", ["test/lazy-cont-v0", "test/lazy-disc-v0"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"gamma": 0.9, "reward_scale": 0.01},
        {"delayed_reward": True},
        {"start_at_episode_start": True, "cache_bytes": 0},
    ],
)
def test_lazy_windows_equal_in_memory_windows(stored, dataset_id, options):
    memory, lazy = _pair(dataset_id, **options)
    for epoch in (0, 3):
        memory.set_epoch(epoch)
        lazy.set_epoch(epoch)
        indices = list(range(64))
        a, b = memory.__getitems__(indices), lazy.__getitems__(indices)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert torch.equal(a[key], b[key]), key
        single = lazy[7]
        assert all(torch.equal(single[k], b[k][7]) for k in b)


def test_lazy_windows_match_the_raw_episodes(stored):
    """Independent of the in-memory code: each window is the stored slice, RTG the plain suffix sum."""
    episodes = stored["test/lazy-cont-v0"]
    _, lazy = _pair("test/lazy-cont-v0", gamma=0.9)
    batch = lazy.__getitems__(range(64))
    for i in range(64):
        mask = batch["mask"][i].numpy()
        real = int(mask.sum())
        assert mask[-real:].all() and not mask[:-real].any()  # left-padded
        obs = batch["observations"][i].numpy()
        assert not obs[~mask].any()
        t0 = int(batch["timesteps"][i][-real])
        ep = next(e for e in episodes if e.length > t0 and np.array_equal(e.observations[t0], obs[-real]))
        np.testing.assert_array_equal(obs[-real:], ep.observations[t0 : t0 + real])
        for j in range(real):
            t = t0 + j
            expected = sum(0.9**k * float(r) for k, r in enumerate(ep.rewards[t:]))
            assert batch["returns_to_go"][i, -real + j, 0].item() == pytest.approx(
                expected, rel=1e-5, abs=1e-5
            )


class _CountingMapping:
    """Stands in for the mmap in a mapped layout, counting the page drops it is asked for."""

    def __init__(self, mapping):
        self.mapping, self.drops = mapping, 0

    def madvise(self, option):
        assert option == mmap.MADV_DONTNEED
        self.drops += 1
        self.mapping.madvise(option)


def test_mapped_pages_are_dropped_within_the_cache_bound(stored):
    bound = 4 * mmap.PAGESIZE
    memory, lazy = _pair("test/lazy-cont-v0", cache_bytes=bound)
    lazy._open()
    assert lazy._mapped is not None  # minari's layout is read through the memory map
    lazy._mapped.mapping = counting = _CountingMapping(lazy._mapped.mapping)
    for epoch in range(4):
        memory.set_epoch(epoch)
        lazy.set_epoch(epoch)
        a, b = memory.__getitems__(range(64)), lazy.__getitems__(range(64))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert 0 <= lazy._touched <= bound
    assert counting.drops >= 4


def test_block_draws_stay_uniform_over_runs_and_local_within_one():
    n_steps, blocks = 1000, BlockDraws(block_steps=100, active=3, run_windows=50)
    steps = draw_block_steps(7, 2, np.arange(200_000), n_steps, blocks)
    assert steps.min() >= 0 and steps.max() < n_steps
    # Marginally uniform: each tenth of the steps gets a tenth of the draws (4000 runs x 3 picks).
    share = np.bincount(steps // 100, minlength=10) / len(steps)
    np.testing.assert_allclose(share, 0.1, atol=0.01)
    assert np.bincount(steps % 100, minlength=100).min() > 0.7 * len(steps) / 100  # within a block too
    runs = steps.reshape(-1, 50) // 100  # (runs, windows) block of each window
    distinct = np.array([len(np.unique(r)) for r in runs])
    assert distinct.max() <= 3 and distinct.mean() > 2  # 3 blocks a run (fewer on repeats)
    assert len({tuple(np.unique(r)) for r in runs[:100]}) > 50  # and other blocks next run
    again = draw_block_steps(7, 2, np.arange(200_000), n_steps, blocks)
    other_epoch = draw_block_steps(7, 3, np.arange(200_000), n_steps, blocks)
    assert np.array_equal(steps, again) and not np.array_equal(steps, other_epoch)
    for bad in ({"block_steps": 0}, {"block_steps": 10, "active": 0}, {"block_steps": 10, "run_windows": 0}):
        with pytest.raises(ValueError, match="BlockDraws needs positive sizes"):
            BlockDraws(**bad)


def test_block_draws_read_the_same_windows_and_drop_pages_once_per_run(stored):
    blocks = BlockDraws(block_steps=40, active=2, run_windows=16)
    memory, lazy = _pair("test/lazy-cont-v0", blocks=blocks, cache_bytes=0)
    lazy._open()
    lazy._mapped.mapping = counting = _CountingMapping(lazy._mapped.mapping)
    for first in range(0, 64, 8):  # batches of 8: two per run of 16 windows
        a, b = memory.__getitems__(range(first, first + 8)), lazy.__getitems__(range(first, first + 8))
        assert all(torch.equal(a[k], b[k]) for k in a)
    # Only at each new run, even with no cache at all (uniform draws would drop at every batch).
    assert counting.drops == 4
    n, total = 4, sum(LENGTHS)  # 148 steps in 4 blocks of 37
    bounds = np.array([b * total // n for b in range(n + 1)])
    blocks_read = np.searchsorted(bounds, memory.starts(range(64)), side="right") - 1
    assert max(len(np.unique(r)) for r in blocks_read.reshape(4, 16)) <= 2


def test_shuffle_buffer_sets_blocks_from_the_stored_bytes_per_step(stored):
    kwargs = dict(context_len=4, batch_size=8, windows_per_epoch=32, val_windows=8, val_fraction=0.25)
    dm = OfflineTrajectoryDataModule("test/lazy-cont-v0", data_mode="lazy", shuffle_buffer_mb=0.01, **kwargs)
    dm.setup("fit")
    blocks = dm.train_set.blocks
    per_step = dataset_bytes("test/lazy-cont-v0") / sum(LENGTHS)
    assert blocks.block_steps == max(4, int(0.01 * 2**20 / blocks.active / per_step))
    plain = OfflineTrajectoryDataModule("test/lazy-cont-v0", data_mode="lazy", **kwargs)
    plain.setup("fit")
    assert plain.train_set.blocks is None
    with pytest.raises(ValueError, match="shuffle_buffer_mb"):
        OfflineTrajectoryDataModule("test/lazy-cont-v0", shuffle_buffer_mb=-1)


@pytest.mark.parametrize("offsets", [(8, 60), (3, 61)], ids=["aligned", "unaligned"])
def test_mapped_columns_read_rows_at_any_alignment(offsets):
    """Rows are indexed as whole elements when every episode starts at one alignment, else as bytes."""
    rows = [np.arange(12, dtype=np.float32).reshape(4, 3) + 100 * e for e in range(2)]  # 2 episodes x 4 rows
    buffer = np.zeros(128, dtype=np.uint8)
    for at, r in zip(offsets, rows, strict=True):
        buffer[at : at + r.nbytes] = r.view(np.uint8).reshape(-1)
    fields = [[(at, np.dtype(np.float32), (4, 3))] for at in offsets]
    column = _column(buffer, fields, 0)
    assert column.row_units == (3 if offsets == (8, 60) else 12)
    episode, step = np.array([1, 0, 1]), np.array([[0, 1], [2, 3], [3, 3]])
    expected = np.stack([rows[e][s] for e, s in zip(episode, step, strict=True)])
    np.testing.assert_array_equal(column.gather(episode, step), expected)


def _without_offsets(lazy: LazyTrajectoryWindows) -> LazyTrajectoryWindows:
    """Force the episodes mode (h5py reads, episode cache), as for a compressed dataset."""
    lazy.raw = [None] * len(lazy.raw)
    return lazy


def test_episode_cache_stays_within_its_bound(stored):
    episode_bytes = max(LENGTHS) * (3 + 1 + 1 + 1) * 4  # the longest episode's obs, action, rtg, reward
    _, lazy = _pair("test/lazy-cont-v0", cache_bytes=2 * episode_bytes)
    _without_offsets(lazy)
    for epoch in range(5):
        lazy.set_epoch(epoch)
        lazy.__getitems__(range(64))
        assert lazy._mapped is None
        assert 0 < lazy._cached_bytes <= 2 * episode_bytes
    assert lazy.reads > len(LENGTHS)  # evicted episodes were read again


@pytest.mark.parametrize("mapped", [True, False])
def test_each_rank_reads_only_the_episodes_it_samples(stored, mapped):
    memory, _ = _pair("test/lazy-cont-v0")
    ends = np.cumsum(LENGTHS)  # independent: the episode of a global step
    for rank in (0, 1):
        _, lazy = _pair("test/lazy-cont-v0", cache_bytes=0)
        indices = list(DistributedSampler(lazy, num_replicas=2, rank=rank, shuffle=False))
        seen: list[int] = []
        if mapped:
            lazy._open()
            gather = lazy._mapped.gather
            lazy._mapped.gather = lambda w, e, s, _g=gather, _seen=seen: (
                _seen.extend(e.tolist()) or _g(w, e, s)
            )
        else:
            original = _without_offsets(lazy)._episode
            lazy._episode = lambda e, _orig=original, _seen=seen: _seen.append(e) or _orig(e)  # type: ignore[method-assign]
        lazy.__getitems__(indices)
        starts = memory.starts(indices)
        expected = {int(np.searchsorted(ends, s, side="right")) for s in starts}
        assert set(seen) == expected


def test_streaming_stats_equal_two_pass_stats(stored):
    lazy = scan_offline_dataset("test/lazy-cont-v0")
    mean, std = streaming_obs_stats(lazy.path, lazy.episodes[2:])
    obs = np.concatenate([e.observations for e in stored["test/lazy-cont-v0"][2:]]).astype(np.float64)
    np.testing.assert_allclose(mean, obs.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std, obs.std(0), rtol=1e-6)
    through_h5py = [dataclasses.replace(e, raw=None) for e in lazy.episodes[2:]]
    np.testing.assert_array_equal(streaming_obs_stats(lazy.path, through_h5py)[0], mean)
    assert [e.length for e in lazy.episodes] == list(LENGTHS)
    assert [e.total_return for e in lazy.episodes] == [
        float(np.sum(e.rewards, dtype=np.float64)) for e in stored["test/lazy-cont-v0"]
    ]


def test_datamodule_lazy_mode_matches_memory_mode(stored):
    kwargs = dict(context_len=4, batch_size=8, windows_per_epoch=32, val_windows=8, val_fraction=0.25)
    memory = OfflineTrajectoryDataModule("test/lazy-cont-v0", data_mode="memory", **kwargs)
    lazy = OfflineTrajectoryDataModule("test/lazy-cont-v0", data_mode="lazy", cache_mb=0.001, **kwargs)
    auto = OfflineTrajectoryDataModule("test/lazy-cont-v0", lazy_above_mb=0.0, **kwargs)
    small = OfflineTrajectoryDataModule("test/lazy-cont-v0", **kwargs)
    for dm in (memory, lazy, auto, small):
        dm.setup("fit")
    assert (memory.lazy, lazy.lazy, auto.lazy, small.lazy) == (False, True, True, False)
    assert isinstance(lazy.train_set, LazyTrajectoryWindows)
    memory_spec, lazy_spec = memory.data_spec(), lazy.data_spec()
    # One pass in float64 vs a streaming sum: the statistics agree to rounding, the rest exactly.
    np.testing.assert_allclose(lazy_spec.pop("obs_mean"), memory_spec.pop("obs_mean"), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lazy_spec.pop("obs_std"), memory_spec.pop("obs_std"), rtol=1e-6)
    assert memory_spec == lazy_spec
    np.testing.assert_allclose(lazy.obs_mean, memory.obs_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lazy.obs_std, memory.obs_std, rtol=1e-6)
    for loader in ("train_dataloader", "val_dataloader"):
        for a, b in zip(getattr(memory, loader)(), getattr(lazy, loader)(), strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_data_mode_is_rejected():
    with pytest.raises(ValueError, match="data_mode"):
        OfflineTrajectoryDataModule("test/lazy-cont-v0", data_mode="disk")


def test_h5py_fallback_reads_the_same_windows(stored):
    """Arrays HDF5 does not store as one raw block are read through h5py: same windows."""
    memory, lazy = _pair("test/lazy-disc-v0", cache_bytes=0)
    assert all(raw is not None for raw in lazy.raw)  # minari's layout takes the positioned reads
    _without_offsets(lazy)
    a, b = memory.__getitems__(range(64)), lazy.__getitems__(range(64))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("gap", [16, 1 << 20])
def test_positioned_reads_return_each_array(tmp_path, gap):
    """Arrays close together come back from one read, far apart from one read each: same bytes."""
    from lit_seqrl.data.lazy import RawArray, _plan_reads, _read_raw

    rng = np.random.default_rng(0)
    arrays = [
        rng.normal(size=(7, 3)).astype(np.float32),
        rng.integers(0, 9, size=(6, 1)).astype(np.int64),
        rng.normal(size=6).astype("<f4"),
    ]
    path, offsets, pos = tmp_path / "blob", [], 100
    with open(path, "wb") as f:
        for a in arrays:
            f.seek(pos)
            f.write(a.tobytes())
            offsets.append(pos)
            pos += a.nbytes + gap
    raw = tuple(RawArray(o, a.dtype.str, a.shape) for o, a in zip(offsets, arrays, strict=True))
    reads = _plan_reads(raw)
    assert len(reads) == (1 if gap < 1024 else 3)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = _read_raw(fd, reads)
    finally:
        os.close(fd)
    for g, a in zip(got, arrays, strict=True):
        assert g.dtype == a.dtype and g.shape == a.shape
        np.testing.assert_array_equal(g, a)
