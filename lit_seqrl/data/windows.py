"""Return-to-go and fixed-length training windows over offline episodes.

A window is K consecutive steps of one episode, left-padded when the episode ends within
K steps of the start (as the original Decision Transformer code pads), with a mask saying
which rows are real. Windows are drawn as a pure function of (seed, epoch, index), uniformly or
block by block (:class:`BlockDraws`, a shuffle buffer for data larger than memory), so the
dataset is map-style: a DistributedSampler can shard it and a resumed run sees the same data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from lit_seqrl.data.episodes import Episode
from lit_seqrl.errors import ConfigError

__all__ = [
    "BlockDraws",
    "TrajectoryWindows",
    "collate_windows",
    "delay_rewards",
    "draw_block_steps",
    "draw_steps",
    "observation_stats",
    "returns_to_go",
    "split_episodes",
]

Batch = dict[str, torch.Tensor]


def returns_to_go(rewards: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """R_t = sum_{k >= t} gamma^(k-t) r_k, accumulated in float64.

    rewards (T,) -> (T,) float32.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if gamma == 1.0:
        # Suffix sums; summing the reversed array keeps the rounding of a backward recursion.
        return np.cumsum(r[::-1])[::-1].astype(np.float32)
    out = np.empty_like(r)
    acc = 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + gamma * acc
        out[t] = acc
    return out.astype(np.float32)


def delay_rewards(rewards: np.ndarray) -> np.ndarray:
    """Move the episode's whole return to its last step (the DT paper's delayed-reward study).

    rewards (T,) -> (T,) float32, zeros except the last entry = sum of rewards (float64 sum).
    """
    r = np.asarray(rewards).reshape(-1)
    out = np.zeros(len(r), dtype=np.float32)
    if len(r):
        out[-1] = np.sum(r, dtype=np.float64)
    return out


def observation_stats(episodes: Sequence[Episode]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over every step of ``episodes``, each (obs_dim,) float32.

    The std is floored at 1e-6 so constant features normalise to 0 instead of inf.
    """
    if not episodes:
        raise ConfigError("observation_stats needs at least one episode")
    obs = np.concatenate([ep.observations for ep in episodes], axis=0).astype(np.float64)
    return obs.mean(axis=0).astype(np.float32), np.maximum(obs.std(axis=0), 1e-6).astype(np.float32)


def split_episodes(
    episodes: Sequence[Episode], val_fraction: float, seed: int
) -> tuple[list[Episode], list[Episode]]:
    """Deterministic split by episode (never inside one) into (train, val), order preserved.

    With ``val_fraction > 0`` and at least two episodes, both parts get at least one episode.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(episodes)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    elif n < 2:
        n_val = 0
    is_val = np.zeros(n, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    train = [ep for ep, v in zip(episodes, is_val) if not v]
    val = [ep for ep, v in zip(episodes, is_val) if v]
    return train, val


@dataclass(frozen=True)
class BlockDraws:
    """Draw windows block by block, like a shuffle buffer, instead of from anywhere in the data.

    The steps are cut into blocks of about ``block_steps`` consecutive steps. Each run of
    ``run_windows`` window indices (a *run*) draws from ``active`` blocks picked at random for
    that run, each window from one of them uniformly, so over many runs every step is as likely
    as with uniform draws, while within a run only ``active`` blocks are read. Lazy mode relies
    on it to read a bounded part of the file at a time (see ``shuffle_buffer_mb`` of the data
    module); windows close together in a run come from the same blocks.
    """

    block_steps: int
    active: int = 8
    run_windows: int = 4096

    def __post_init__(self) -> None:
        if min(self.block_steps, self.active, self.run_windows) < 1:
            raise ConfigError(f"BlockDraws needs positive sizes, got {self}")

    @classmethod
    def holding(cls, buffer_bytes: float, bytes_per_step: float, min_steps: int = 1) -> BlockDraws:
        """Blocks sized so that the ``active`` ones together hold about ``buffer_bytes``."""
        block_steps = int(buffer_bytes / cls.active / bytes_per_step)
        return cls(block_steps=max(block_steps, min_steps))


class WindowSampler(Dataset):
    """What every window dataset shares: its arguments, and the deterministic draw of a start step
    per ``(seed, epoch, index)``. Subclasses set ``num_steps`` and map a drawn step to a window.
    With ``blocks``, start steps are drawn block by block (:class:`BlockDraws`)."""

    def __init__(
        self,
        episodes: Sequence,
        context_len: int,
        num_windows: int,
        seed: int,
        start_at_episode_start: bool,
        blocks: BlockDraws | None = None,
    ) -> None:
        if context_len < 1:
            raise ConfigError(f"context_len (K) must be >= 1, got {context_len}")
        if num_windows < 1:
            raise ConfigError(f"num_windows must be >= 1, got {num_windows}")
        if not episodes or sum(ep.length for ep in episodes) == 0:
            raise ConfigError(f"{type(self).__name__} needs at least one non-empty episode")
        self.context_len = context_len
        self.num_windows = num_windows
        self.seed = seed
        self.start_at_episode_start = start_at_episode_start
        self.blocks = blocks
        self.epoch = 0
        self.num_steps = 0  # set by the subclass: all steps of all episodes

    def __len__(self) -> int:
        return self.num_windows

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of windows (call once per epoch, like DistributedSampler.set_epoch)."""
        self.epoch = int(epoch)

    # The epoch is the dataset's whole state: a StatefulDataLoader saves it with its position, so a
    # run resumed mid-epoch (where Lightning does not call on_train_epoch_start) draws that epoch.
    def state_dict(self) -> dict[str, int]:
        """``{"epoch": ...}``, saved in checkpoints by ``torchdata``'s StatefulDataLoader."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the epoch ``state`` was taken in."""
        self.set_epoch(state["epoch"])

    def drawn_steps(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """The uniformly drawn step (global index) of the windows ``indices`` (B,) -> (B,) int64."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_windows):
            raise IndexError(f"window index out of range [0, {self.num_windows})")
        if self.blocks is not None:
            return draw_block_steps(self.seed, self.epoch, idx, self.num_steps, self.blocks)
        return draw_steps(self.seed, self.epoch, idx, self.num_steps)

    def __getitem__(self, index: int) -> Batch:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        raise NotImplementedError


class TrajectoryWindows(WindowSampler):
    """``num_windows`` windows of K steps, each a deterministic draw from (seed, epoch, index).

    A start step s is drawn uniformly over all steps of all episodes (so an episode is picked
    with probability proportional to its length); the window is steps [s, s+K) cut at the
    episode end and left-padded to K. With ``start_at_episode_start`` the window is instead the
    first K steps of the episode that s falls in (still length-proportional).

    Items are dicts of tensors (a batch adds a leading B):
        observations   (K, obs_dim) float32, raw (normalising is the agent's job)
        actions        (K, act_dim) float32, or (K,) int64 for discrete actions
        returns_to_go  (K, 1) float32, return-to-go (after gamma / delay) x reward_scale
        rewards        (K, 1) float32, reward (after delay) x reward_scale
        timesteps      (K,) int64, step index within the episode
        mask           (K,) bool, True for real steps; padded rows are zeros
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        context_len: int,
        num_windows: int,
        *,
        gamma: float = 1.0,
        delayed_reward: bool = False,
        reward_scale: float = 1.0,
        seed: int = 0,
        start_at_episode_start: bool = False,
        blocks: BlockDraws | None = None,
    ) -> None:
        super().__init__(episodes, context_len, num_windows, seed, start_at_episode_start, blocks)

        # Flat arrays over all steps, built once, so fetching a batch is a few fancy-index gathers.
        rewards = [delay_rewards(ep.rewards) if delayed_reward else ep.rewards for ep in episodes]
        lengths = np.array([ep.length for ep in episodes], dtype=np.int64)
        ends = np.cumsum(lengths)  # (E,)
        self.observations = np.concatenate([ep.observations for ep in episodes]).astype(np.float32)  # (N, D)
        self.actions = np.concatenate([ep.actions for ep in episodes])  # (N, A) or (N,)
        self.discrete = self.actions.ndim == 1
        self.actions = self.actions.astype(np.int64 if self.discrete else np.float32)
        self.returns = np.concatenate([returns_to_go(r, gamma) for r in rewards]) * np.float32(reward_scale)
        self.rewards = np.concatenate(rewards).astype(np.float32) * np.float32(reward_scale)  # (N,)
        self.timesteps = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])  # (N,)
        self.episode_end = np.repeat(ends, lengths)  # (N,) one past each step's episode's last step
        self.episode_start = self.episode_end - np.repeat(lengths, lengths)  # (N,)
        self.num_steps = int(ends[-1])

    def starts(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """First real step (global index) of the windows ``indices`` (B,) -> (B,) int64."""
        step = self.drawn_steps(indices)
        return self.episode_start[step] if self.start_at_episode_start else step

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A whole batch at once, already collated: the DataLoader calls this when present."""
        s = self.starts(indices)[:, None]  # (B, 1)
        k = self.context_len
        real = np.minimum(self.episode_end[s[:, 0]] - s[:, 0], k)[:, None]  # (B, 1) rows not padded
        offset = np.arange(k)[None, :] - (k - real)  # (B, K) negative on padding
        mask = offset >= 0  # (B, K)
        rows = np.where(mask, s + offset, 0)  # (B, K) any valid row for padding, zeroed below
        obs = self.observations[rows]  # (B, K, D)
        obs[~mask] = 0.0
        act = self.actions[rows]  # (B, K, A) or (B, K)
        act[~mask] = 0
        rtg = np.where(mask, self.returns[rows], np.float32(0.0))  # (B, K)
        rew = np.where(mask, self.rewards[rows], np.float32(0.0))  # (B, K)
        ts = np.where(mask, self.timesteps[rows], 0)  # (B, K)
        return {
            "observations": torch.from_numpy(obs),
            "actions": torch.from_numpy(act),
            "returns_to_go": torch.from_numpy(rtg[..., None]),
            "rewards": torch.from_numpy(rew[..., None]),
            "timesteps": torch.from_numpy(ts),
            "mask": torch.from_numpy(mask),
        }


def draw_steps(seed: int, epoch: int, indices: np.ndarray, num_steps: int) -> np.ndarray:
    """Uniform step draws in [0, num_steps), a pure function of (seed, epoch, index): (B,) -> (B,) int64.

    Shared by the in-memory and the lazy window datasets, so both draw the same windows.
    """
    draws = _splitmix64(_key(seed, epoch) ^ _u64(indices))  # (B,) uniform 64-bit
    # Modulo bias is below num_steps / 2**64: negligible.
    return (draws % np.uint64(num_steps)).astype(np.int64)


def draw_block_steps(
    seed: int, epoch: int, indices: np.ndarray, num_steps: int, blocks: BlockDraws
) -> np.ndarray:
    """Start steps drawn block by block (:class:`BlockDraws`), a pure function of (seed, epoch,
    index): (B,) -> (B,) int64 in [0, num_steps)."""
    key, idx = _key(seed, epoch), _u64(indices)
    n_blocks = max(1, -(-num_steps // blocks.block_steps))
    active = np.uint64(blocks.active)
    draws = _splitmix64(key ^ idx)  # (B,) 64 random bits: the slot from the low ones, the step from the rest
    run = idx // np.uint64(blocks.run_windows)  # (B,)
    block = _splitmix64(key ^ _SALT_BLOCK ^ (run * active + draws % active)) % np.uint64(n_blocks)
    # Equal blocks up to one step: block b is steps [b N / n, (b + 1) N / n).
    block = block.astype(np.int64)
    lo, hi = block * num_steps // n_blocks, (block + 1) * num_steps // n_blocks  # (B,), (B,)
    return lo + ((draws // active) % (hi - lo).astype(np.uint64)).astype(np.int64)


def _key(seed: int, epoch: int) -> np.ndarray:
    # 1-element arrays, not numpy scalars: array arithmetic wraps silently, scalar math warns.
    seed_a = np.array([seed % 2**64], dtype=np.uint64)
    epoch_a = np.array([epoch % 2**64], dtype=np.uint64)
    return _splitmix64(_splitmix64(seed_a) ^ epoch_a)  # (1,)


def _u64(indices: np.ndarray | Sequence[int]) -> np.ndarray:
    return np.asarray(indices, dtype=np.int64).astype(np.uint64)


def collate_windows(batch: Sequence[Mapping[str, torch.Tensor]] | Mapping[str, torch.Tensor]) -> Batch:
    """DataLoader ``collate_fn``: passes an already-batched dict through, stacks a list of items."""
    if isinstance(batch, Mapping):
        return dict(batch)
    if not batch:
        raise ValueError("collate_windows got an empty batch")
    return {key: torch.stack([item[key] for item in batch]) for key in batch[0]}


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SALT_BLOCK = np.uint64(0xB10C4)  # the blocks of a run: a stream apart from the windows' draws


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array: a counter-based hash, so draw i needs no state.

    uint64 arithmetic wraps modulo 2**64 by design.
    """
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))
