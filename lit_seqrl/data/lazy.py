"""Offline data larger than memory: windows read on demand from a stored minari HDF5 dataset.

Per-episode metadata (id, length, return, byte offsets) and, once per process, the scaled
returns-to-go and rewards live in memory; observation and action rows are read from the HDF5 file
when a window needs them, through a memory map whose resident pages are bounded in bytes (or, for
layouts HDF5 does not store as plain blocks, a cache of whole episodes). The windows are exactly
those of the in-memory :class:`~lit_seqrl.data.windows.TrajectoryWindows` for the same episodes
and seed: both draw start steps through :class:`~lit_seqrl.data.windows.WindowSampler` (uniformly,
or block by block) and compute returns-to-go with the same arithmetic.

Under DDP every rank reads only the episodes of the windows its sampler hands it.
"""

from __future__ import annotations

import json
import math
import mmap
import multiprocessing
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import minari
import numpy as np
import torch

from lit_seqrl.data.episodes import OfflineDataset, check_spaces, dataset_env_id, reference_scores
from lit_seqrl.data.paths import DatasetNotFoundError, find_data_path, missing_message
from lit_seqrl.data.windows import Batch, BlockDraws, WindowSampler, delay_rewards, returns_to_go
from lit_seqrl.errors import ConfigError

__all__ = [
    "EpisodeRef",
    "LazyTrajectoryWindows",
    "dataset_bytes",
    "scan_offline_dataset",
    "streaming_obs_stats",
]

_MAIN_FILE = "main_data.hdf5"


_FIELDS = ("observations", "actions", "rewards")


@dataclass
class RawArray:
    """Where an uncompressed HDF5 array's bytes lie in the file."""

    offset: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


# Arrays of one episode closer than this are read with one ``pread`` spanning them all (HDF5
# writes an episode's datasets next to each other): a syscall costs more than a few KiB of bytes.
_MAX_GAP = 64 * 2**10


@dataclass
class RawRead:
    """One positioned read of ``size`` bytes at ``offset``, holding the arrays ``views``.

    ``views``: (offset in the read buffer, numpy dtype, shape) per array, in field order.
    """

    offset: int
    size: int
    views: tuple[tuple[int, np.dtype, tuple[int, ...]], ...]


def _plan_reads(arrays: tuple[RawArray, ...]) -> tuple[RawRead, ...]:
    """The fewest positioned reads for ``arrays``: one span when they lie close together."""
    start = min(a.offset for a in arrays)
    end = max(a.offset + a.nbytes for a in arrays)
    if end - start <= sum(a.nbytes for a in arrays) + _MAX_GAP:
        views = tuple((a.offset - start, np.dtype(a.dtype), a.shape) for a in arrays)
        return (RawRead(start, end - start, views),)
    return tuple(RawRead(a.offset, a.nbytes, ((0, np.dtype(a.dtype), a.shape),)) for a in arrays)


@dataclass
class EpisodeRef:
    """What is kept in memory of one stored episode: its id, T steps and undiscounted return.

    ``raw`` locates its observations, actions and rewards in the file when HDF5 stores them as
    one uncompressed block each (minari's default); otherwise (None) they are read through h5py.
    """

    id: int
    length: int
    total_return: float
    raw: tuple[RawRead, ...] | None = None


def _raw_location(dataset: Any) -> RawArray | None:
    """The byte offset of an HDF5 dataset stored as one unfiltered block, else None."""
    if dataset.compression or dataset.shuffle or dataset.fletcher32 or dataset.scaleoffset:
        return None
    if not dataset.dtype.isnative or dataset.dtype.kind not in "fiub":
        return None
    if dataset.chunks is None:
        offset = dataset.id.get_offset()
    elif tuple(dataset.chunks) == dataset.shape and dataset.id.get_num_chunks() == 1:
        info = dataset.id.get_chunk_info(0)
        offset = None if info.filter_mask else info.byte_offset
    else:
        return None
    if offset is None:
        return None
    return RawArray(int(offset), dataset.dtype.str, tuple(dataset.shape))


@dataclass
class LazyOfflineDataset(OfflineDataset):
    """An :class:`OfflineDataset` whose ``episodes`` are :class:`EpisodeRef` s read from ``path``."""

    path: Path | None = None  # the minari HDF5 file


def dataset_bytes(source: str) -> int | None:
    """Size on disk of the stored dataset ``source`` (None if it is not stored)."""
    data_path = find_data_path(source)
    if data_path is None:
        return None
    return sum(f.stat().st_size for f in data_path.iterdir() if f.is_file())


def _hdf5_file(source: str, data_path: Path) -> Path:
    meta = json.loads((data_path / "metadata.json").read_text())
    fmt = meta.get("data_format", "hdf5")
    path = data_path / _MAIN_FILE
    if fmt != "hdf5" or not path.is_file():
        raise ConfigError(f"dataset {source!r}: lazy loading reads minari's hdf5 format, this one is {fmt!r}")
    return path


def scan_offline_dataset(source: str) -> LazyOfflineDataset:
    """One pass over the stored rewards: episode ids, lengths and returns, nothing else kept.

    The pass runs in a short-lived forked process where the platform allows: HDF5 keeps what it
    allocated for every object it opened (tens of MiB per thousand episodes), and that memory
    then never enters the training process.

    Raises DatasetNotFoundError if nothing is stored there, ValueError for a non-hdf5 dataset,
    unsupported spaces or non-finite rewards.
    """
    data_path = find_data_path(source)
    if data_path is None:
        raise DatasetNotFoundError(missing_message(source))
    ds = minari.MinariDataset(data_path)
    check_spaces(source, ds.observation_space, ds.action_space)
    path = _hdf5_file(source, data_path)
    # In id order, as minari iterates them (the file's own key order is lexicographic).
    ids = [int(i) for i in ds.episode_indices]
    refs = _in_child(_scan_file, source, path, ids)
    ref_min, ref_max = reference_scores(ds)
    return LazyOfflineDataset(
        episodes=refs,  # type: ignore[arg-type]  # refs stand in for episodes: length, total_return, id
        dataset_id=ds.id,
        env_id=dataset_env_id(ds),
        observation_space=ds.observation_space,
        action_space=ds.action_space,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        path=path,
    )


def _scan_file(source: str, path: Path, ids: list[int]) -> list[EpisodeRef]:
    import h5py  # minari's hdf5 extra; only lazy mode needs it directly

    refs = []
    with h5py.File(path, "r") as f:
        for episode_id in ids:
            group = f[f"episode_{episode_id}"]
            rewards = np.asarray(group["rewards"][()], dtype=np.float32).reshape(-1)
            if not np.isfinite(rewards).all():
                step = int(np.argwhere(~np.isfinite(rewards))[0][0])
                raise ConfigError(
                    f"dataset {source!r}: episode {episode_id} has a non-finite value in rewards (first at step {step})"
                )
            raw = tuple(_raw_location(group[name]) for name in _FIELDS)
            total = float(np.sum(rewards, dtype=np.float64))
            reads = None if None in raw else _plan_reads(raw)  # type: ignore[arg-type]
            refs.append(EpisodeRef(episode_id, len(rewards), total, reads))
    return refs


def _in_child(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a forked process (its result pickled back), or here where fork is absent."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return fn(*args)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(fn, *args).result()


def _read_raw(fd: int, reads: tuple[RawRead, ...]) -> tuple[np.ndarray, ...]:
    """The arrays of ``reads``, in field order (no HDF5 library involved)."""
    out = []
    for read in reads:
        buf = os.pread(fd, read.size, read.offset)
        for at, dtype, shape in read.views:
            count = math.prod(shape)
            out.append(np.frombuffer(buf, dtype=dtype, count=count, offset=at).reshape(shape))
    return tuple(out)


def streaming_obs_stats(path: Path, episodes: Sequence[EpisodeRef]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over every step of ``episodes``, one episode in memory at a time.

    Merges per-episode (count, mean, M2) with Chan et al.'s parallel update in float64, so it
    agrees with the two-pass in-memory statistics to float32 precision. Each (obs_dim,) float32;
    the std is floored at 1e-6 as in ``observation_stats``.
    """
    import h5py

    if not episodes:
        raise ConfigError("streaming_obs_stats needs at least one episode")
    count, mean, m2 = 0, None, None
    fd = os.open(path, os.O_RDONLY)
    f = None  # h5py, opened only for episodes without raw offsets
    try:
        for ref in episodes:
            if ref.raw is not None:
                stored = _read_raw(fd, ref.raw[:1])[0]
            else:
                f = f if f is not None else h5py.File(path, "r")
                stored = f[f"episode_{ref.id}"]["observations"][()]
            obs = np.asarray(stored[: ref.length], dtype=np.float32)
            if not np.isfinite(obs).all():
                step = int(np.argwhere(~np.isfinite(obs))[0][0])
                raise ConfigError(
                    f"episode {ref.id} has a non-finite value in observations (first at step {step})"
                )
            x = obs.astype(np.float64)
            n_b, mean_b = len(x), x.mean(axis=0)
            m2_b = ((x - mean_b) ** 2).sum(axis=0)
            if mean is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            total = count + n_b
            delta = mean_b - mean
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta**2 * (count * n_b / total)
            count = total
    finally:
        os.close(fd)
        if f is not None:
            f.close()
    assert mean is not None and m2 is not None
    std = np.sqrt(m2 / count)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


class LazyTrajectoryWindows(WindowSampler):
    """The windows of :class:`~lit_seqrl.data.windows.TrajectoryWindows`, read on demand.

    Same items, same draws for the same ``(seed, epoch, index)``. Two ways to read:

    - *mapped* (minari's default layout: every episode's arrays stored uncompressed): the file
      is memory-mapped and a batch's observation and action rows are gathered straight from it
      with one vectorised index per array, no per-episode work. Returns-to-go and rewards (8
      bytes per step) are computed once and kept in memory. Mapped pages are dropped from this
      process (``madvise``) once about ``cache_bytes`` have been touched, so its resident memory
      stays bounded; the OS page cache keeps what it can.
    - *episodes* (any other layout, through h5py): whole episodes are decoded into a cache of at
      most ``cache_bytes`` (least recently used go first).

    The file is opened per process on first use, so DataLoader workers each open their own.
    """

    def __init__(
        self,
        path: Path,
        episodes: Sequence[EpisodeRef],
        context_len: int,
        num_windows: int,
        *,
        discrete: bool,
        gamma: float = 1.0,
        delayed_reward: bool = False,
        reward_scale: float = 1.0,
        seed: int = 0,
        start_at_episode_start: bool = False,
        cache_bytes: int = 64 * 2**20,
        blocks: BlockDraws | None = None,
    ) -> None:
        super().__init__(episodes, context_len, num_windows, seed, start_at_episode_start, blocks)
        if cache_bytes < 0:
            raise ConfigError(f"cache_bytes must be >= 0, got {cache_bytes}")
        self.path = Path(path)
        self.discrete, self.gamma, self.delayed_reward = discrete, gamma, delayed_reward
        self.reward_scale = np.float32(reward_scale)
        self.cache_bytes = cache_bytes
        self.ids = np.array([ep.id for ep in episodes], dtype=np.int64)  # (E,)
        self.raw = [getattr(ep, "raw", None) for ep in episodes]  # byte offsets, or None: use h5py
        lengths = np.array([ep.length for ep in episodes], dtype=np.int64)  # (E,)
        self.ends = np.cumsum(lengths)  # (E,) one past each episode's last global step
        self.begins = self.ends - lengths  # (E,)
        self.num_steps = int(self.ends[-1])
        self.reads = 0  # episodes read (or gathered from, when mapped), for tests and benchmarks
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._pid: int | None = None
        self._file: Any = None  # h5py file (episodes mode)
        self._fd: int | None = None
        self._cache: OrderedDict[int, tuple[np.ndarray, ...]] = OrderedDict()
        self._cached_bytes = 0
        self._mapped: _MappedLayout | None = None
        self._touched = 0  # bytes of the mapping touched since pages were last dropped
        self._run = -1  # with block draws: the newest run of windows read

    def __getstate__(self) -> dict[str, Any]:  # a worker gets no open handle and an empty cache
        state = dict(self.__dict__)
        clone = object.__new__(type(self))
        clone._reset_process_state()
        state.update(clone.__dict__)
        return state

    def _open(self) -> None:
        """Per process, on first use (a forked DataLoader worker included)."""
        if self._pid == os.getpid():
            return
        self._reset_process_state()
        self._pid = os.getpid()
        if all(r is not None for r in self.raw):
            self._mapped = _MappedLayout.build(self)

    def starts(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """First real step (global index) of the windows ``indices`` (B,) -> (B,) int64."""
        step = self.drawn_steps(indices)
        if self.start_at_episode_start:
            return self.begins[np.searchsorted(self.ends, step, side="right")]
        return step

    def _episode(self, e: int) -> tuple[np.ndarray, ...]:
        """Episode e's arrays (see ``_decode``), through the cache."""
        hit = self._cache.get(e)
        if hit is not None:
            self._cache.move_to_end(e)
            return hit
        item = self._decode(e)
        size = sum(a.nbytes for a in item)
        if size <= self.cache_bytes:
            self._cache[e] = item
            self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= sum(a.nbytes for a in old)
        return item

    def _decode(self, e: int) -> tuple[np.ndarray, ...]:
        """(observations (T, D) f32, actions, returns-to-go (T,) f32, rewards (T,) f32) of episode e."""
        n = int(self.ends[e] - self.begins[e])
        obs_all, raw_act, rewards = self._read(e)
        # Views where the stored dtype already matches (minari stores float32): no copies.
        obs = obs_all[:n].astype(np.float32, copy=False)
        act = raw_act[:n].astype(np.int64 if self.discrete else np.float32, copy=False)
        act = act.reshape(n) if self.discrete else act.reshape(n, -1)
        rtg, rew = self._returns(rewards[:n].reshape(n))
        self.reads += 1
        return obs, act, rtg, rew

    def _returns(self, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scaled returns-to-go and rewards of one episode, (T,) float32 each."""
        if self.delayed_reward:
            rewards = delay_rewards(rewards)
        # The same arithmetic as TrajectoryWindows, so the values agree bit for bit.
        rtg = returns_to_go(rewards, self.gamma) * self.reward_scale
        return rtg, rewards.astype(np.float32, copy=False) * self.reward_scale

    def _read(self, e: int) -> tuple[np.ndarray, ...]:
        """Stored observations (T+1 rows), actions and rewards of episode e, as stored."""
        raw = self.raw[e]
        if raw is not None:
            # Positioned reads (one per episode when its arrays lie together): far cheaper than
            # h5py's per-dataset lookups.
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            return _read_raw(self._fd, raw)
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        group = self._file[f"episode_{self.ids[e]}"]
        return tuple(np.asarray(group[name][()]) for name in _FIELDS)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A whole batch at once, already collated (as TrajectoryWindows.__getitems__)."""
        self._open()
        s = self.starts(indices)  # (B,)
        k = self.context_len
        episode = np.searchsorted(self.ends, s, side="right")  # (B,)
        real = np.minimum(self.ends[episode] - s, k)[:, None]  # (B, 1) rows not padded
        step = (s - self.begins[episode])[:, None] + np.arange(k)[None, :] - (k - real)  # (B, K)
        mask = np.arange(k)[None, :] >= (k - real)  # (B, K)
        step = np.where(mask, step, 0)  # (B, K) any valid row for padding, zeroed below
        if self._mapped is not None:
            if self.blocks is not None:  # a new run reads other blocks: let the last run's go
                run = int(np.max(indices)) // self.blocks.run_windows
                if run != self._run:
                    self._mapped.drop()
                    self._run = run
            obs, act = self._mapped.gather(self, episode, step)
            rows = self.begins[episode][:, None] + step  # (B, K) global steps
            rtg_all, rew_all = self._mapped.returns, self._mapped.rewards
            self.reads += 1 + int(np.count_nonzero(np.diff(np.sort(episode))))  # distinct episodes
        else:
            # The batch's distinct episodes side by side, then the same gathers as in memory.
            unique, which = np.unique(episode, return_inverse=True)  # (U,), (B,)
            parts = [self._episode(int(e)) for e in unique]
            lengths = np.array([len(p[2]) for p in parts], dtype=np.int64)  # (U,)
            rows = (np.cumsum(lengths) - lengths)[which][:, None] + step  # (B, K) rows of the parts
            obs_all, act_all, rtg_all, rew_all = (np.concatenate([p[j] for p in parts]) for j in range(4))
            obs, act = obs_all[rows], act_all[rows]  # (B, K, D), (B, K, A) or (B, K)
        obs[~mask] = 0.0
        act[~mask] = 0
        rtg = np.where(mask, rtg_all[rows], np.float32(0.0))  # (B, K)
        rew = np.where(mask, rew_all[rows], np.float32(0.0))  # (B, K)
        return {
            "observations": torch.from_numpy(obs),
            "actions": torch.from_numpy(act),
            "returns_to_go": torch.from_numpy(rtg[..., None]),
            "rewards": torch.from_numpy(rew[..., None]),
            "timesteps": torch.from_numpy(np.where(mask, step, 0)),
            "mask": torch.from_numpy(mask),
        }


_FAULT_AROUND = 64 * 2**10


@dataclass
class _Column:
    """One stored field of every episode in the mapped file: where its rows start, and how to read one."""

    offsets: np.ndarray  # (E,) offset of each episode's first row, in units of `rows`' elements
    dtype: np.dtype  # as stored
    shape: tuple[int, ...]  # of one row
    row_bytes: int
    row_units: int  # elements of `rows` per row
    rows: np.ndarray  # (units - row_units + 1, row_units) view: row i = the elements from unit i

    def gather(self, episode: np.ndarray, step: np.ndarray) -> np.ndarray:
        """Rows ``step`` (B, K) of ``episode`` (B,), as stored: (B, K, *shape); one fancy index."""
        start = self.offsets[episode][:, None] + step * self.row_units  # (B, K)
        return self.rows[start].view(self.dtype).reshape(*step.shape, *self.shape)


@dataclass
class _MappedLayout:
    """Where each episode's observation and action rows start in the memory-mapped file."""

    buffer: np.ndarray  # (file bytes,) uint8 view of the mapping
    mapping: mmap.mmap
    obs: _Column
    act: _Column
    returns: np.ndarray  # (N,) float32 scaled returns-to-go of every step, episodes end to end
    rewards: np.ndarray  # (N,) float32 scaled rewards

    @classmethod
    def build(cls, windows: LazyTrajectoryWindows) -> _MappedLayout:
        fields = [_fields(raw) for raw in windows.raw]  # per episode: (offset, dtype, shape) x 3
        returns = np.empty(windows.num_steps, dtype=np.float32)  # (N,)
        rewards = np.empty(windows.num_steps, dtype=np.float32)  # (N,)
        fd = os.open(windows.path, os.O_RDONLY)
        try:
            # Rewards by positioned reads, not through the mapping, which would keep their pages.
            for e, f in enumerate(fields):
                lo, hi = int(windows.begins[e]), int(windows.ends[e])
                offset, dtype, _ = f[2]
                stored = np.frombuffer(os.pread(fd, (hi - lo) * dtype.itemsize, offset), dtype=dtype)
                returns[lo:hi], rewards[lo:hi] = windows._returns(stored)
            mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)  # the mapping keeps the file
        buffer = np.frombuffer(mapping, dtype=np.uint8)
        return cls(
            buffer=buffer,
            mapping=mapping,
            obs=_column(buffer, fields, 0),
            act=_column(buffer, fields, 1),
            returns=returns,
            rewards=rewards,
        )

    def gather(
        self, windows: LazyTrajectoryWindows, episode: np.ndarray, step: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Observations (B, K, D) float32 and actions of rows ``step`` (B, K) of ``episode`` (B,)."""
        obs = self.obs.gather(episode, step).astype(np.float32, copy=False)
        act = self.act.gather(episode, step)
        act = (
            act.astype(np.int64).reshape(step.shape)
            if windows.discrete
            else act.astype(np.float32, copy=False)
        )
        if windows.blocks is None:  # block draws bound what is touched by themselves
            # A page fault maps up to 64 KiB around the page (Linux's fault-around): count that
            # per window and array, so the resident bytes stay under the bound.
            row_bytes = self.obs.row_bytes + self.act.row_bytes
            windows._touched += len(episode) * (step.shape[1] * row_bytes + 2 * _FAULT_AROUND)
            if windows._touched > windows.cache_bytes and len(self.buffer) > windows.cache_bytes:
                self.drop()
                windows._touched = 0
        return obs, act

    def drop(self) -> None:
        """Unmap this process's pages of the file (the OS page cache keeps its bytes)."""
        self.mapping.madvise(mmap.MADV_DONTNEED)


def _fields(raw: tuple[RawRead, ...]) -> list[tuple[int, np.dtype, tuple[int, ...]]]:
    """(file offset, dtype, shape) of observations, actions and rewards, from their reads."""
    return [(read.offset + at, dtype, shape) for read in raw for at, dtype, shape in read.views]


def _column(buffer: np.ndarray, fields: list, j: int) -> _Column:
    """Field j of every episode, which must share one dtype and row shape."""
    kinds = {(f[j][1], f[j][2][1:]) for f in fields}
    if len(kinds) != 1:
        raise ConfigError(f"episodes store field {_FIELDS[j]!r} with different dtypes or shapes: {kinds}")
    dtype, shape = kinds.pop()
    row_bytes = math.prod(shape) * dtype.itemsize
    offsets = np.array([f[j][0] for f in fields], dtype=np.int64)
    # Every episode's rows at one alignment (as HDF5 lays them out): index whole elements,
    # itemsize times fewer than bytes; otherwise index bytes.
    unit = dtype.itemsize if len(np.unique(offsets % dtype.itemsize)) == 1 else 1
    first = int(offsets[0] % unit)
    units = buffer[first : first + (len(buffer) - first) // unit * unit].view(dtype if unit > 1 else np.uint8)
    rows = np.lib.stride_tricks.sliding_window_view(units, row_bytes // unit)
    return _Column((offsets - first) // unit, dtype, shape, row_bytes, row_bytes // unit, rows)
