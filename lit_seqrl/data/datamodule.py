"""OfflineTrajectoryDataModule: offline episodes -> return-to-go windows for sequence agents."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from lit_seqrl.data.collect import ensure_dataset
from lit_seqrl.data.episodes import OfflineDataset, describe_dataset, load_offline_dataset
from lit_seqrl.data.lazy import (
    LazyTrajectoryWindows,
    dataset_bytes,
    scan_offline_dataset,
    streaming_obs_stats,
)
from lit_seqrl.data.scores import reference_for
from lit_seqrl.data.windows import (
    BlockDraws,
    TrajectoryWindows,
    collate_windows,
    observation_stats,
    split_episodes,
)
from lit_seqrl.errors import ConfigError


class OfflineTrajectoryDataModule(L.LightningDataModule):
    """Windows of K steps sampled from offline episodes (map-style, so DDP shards it).

    Args:
        dataset: a minari dataset id (``lit_seqrl/pendulum/mixed-v0`` and the other built-in
            defaults are generated locally on first use) or a path to a minari dataset directory.
        context_len: K, steps per window.
        batch_size: windows per batch (per device under DDP).
        windows_per_epoch: training windows drawn per epoch (sets the epoch length).
        val_fraction: share of episodes held out for validation (split by episode).
        val_windows: validation windows (drawn once, fixed).
        gamma: discount of the return-to-go (1.0 = the undiscounted sum of DT).
        delayed_reward: move each episode's whole return to its last step (DT's sparse setting).
        reward_scale: multiplies returns-to-go (DT divides MuJoCo returns by 1000).
        start_at_episode_start: windows always start at t=0 (makes recurrent evaluation exact).
        top_fraction: keep only this top share of training episodes by return (%BC), 1.0 = all.
        env_id: environment for evaluation, if the dataset does not name one.
        num_workers: DataLoader workers (0 is fastest for these small in-memory windows).
        seed: sampling and split seed.
        data_mode: ``"memory"`` loads every episode into RAM; ``"lazy"`` keeps only per-episode
            offsets and reads windows from the stored HDF5 file on demand (same windows, memory
            bounded by ``cache_mb``); ``"auto"`` picks lazy when the stored dataset is larger
            than ``lazy_above_mb``.
        lazy_above_mb: size on disk above which ``"auto"`` reads lazily.
        cache_mb: lazy mode's cache of decoded episodes, per process (each DataLoader worker and
            each DDP rank has its own).
        shuffle_buffer_mb: 0 (default) draws every window from anywhere in the data. Above 0,
            windows are drawn like a shuffle buffer (:class:`~lit_seqrl.data.windows.BlockDraws`):
            each run of 4096 windows comes from 8 random blocks of consecutive episodes that
            together hold about this many MiB of the stored file. Every step stays equally
            likely over many runs, and lazy mode reads only those blocks at a time: use it when
            the data is much larger than ``cache_mb`` (uniform draws then re-read pages from
            all over the file, at about a third of in-memory speed). Same windows in both modes.
    """

    def __init__(
        self,
        dataset: str = "lit_seqrl/pendulum/mixed-v0",
        context_len: int = 20,
        batch_size: int = 64,
        windows_per_epoch: int = 32_000,
        val_fraction: float = 0.1,
        val_windows: int = 1024,
        gamma: float = 1.0,
        delayed_reward: bool = False,
        reward_scale: float = 1.0,
        start_at_episode_start: bool = False,
        top_fraction: float = 1.0,
        env_id: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        data_mode: str = "auto",
        lazy_above_mb: float = 1024.0,
        cache_mb: float = 256.0,
        shuffle_buffer_mb: float = 0.0,
    ) -> None:
        super().__init__()
        if context_len < 1:
            raise ConfigError(f"context_len (K) must be >= 1, got {context_len}")
        if batch_size < 1 or windows_per_epoch < 1:
            raise ConfigError(
                f"batch_size and windows_per_epoch must be >= 1, got {batch_size} and {windows_per_epoch}"
            )
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0.0 < top_fraction <= 1.0:
            raise ConfigError(f"top_fraction must be in (0, 1], got {top_fraction}")
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(f"gamma must be in (0, 1], got {gamma}")
        if data_mode not in ("auto", "memory", "lazy"):
            raise ConfigError(f"data_mode must be 'auto', 'memory' or 'lazy', got {data_mode!r}")
        if cache_mb < 0 or shuffle_buffer_mb < 0:
            raise ConfigError(
                f"cache_mb and shuffle_buffer_mb must be >= 0, got {cache_mb}, {shuffle_buffer_mb}"
            )
        self.save_hyperparameters()
        # Dims are known before any data is generated, so the agent can be configured early.
        self.info = describe_dataset(dataset)
        self.data: OfflineDataset | None = None
        self.lazy = False  # decided in setup, once the dataset is stored

    def prepare_data(self) -> None:
        """Generate a built-in default dataset if it is missing (Lightning runs this on rank 0 only)."""
        ensure_dataset(self.hparams.dataset)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        hp = self.hparams
        self.lazy = self._reads_lazily()
        self.data = scan_offline_dataset(hp.dataset) if self.lazy else load_offline_dataset(hp.dataset)
        train_eps, val_eps = split_episodes(self.data.episodes, hp.val_fraction, seed=hp.seed)
        if hp.top_fraction < 1.0:
            n_keep = max(1, round(hp.top_fraction * len(train_eps)))
            train_eps = sorted(train_eps, key=lambda e: e.total_return, reverse=True)[:n_keep]
        self.train_episodes, self.val_episodes = train_eps, val_eps
        if self.lazy:  # training episodes only, one streaming pass
            self.obs_mean, self.obs_std = streaming_obs_stats(self.data.path, train_eps)
        else:
            self.obs_mean, self.obs_std = observation_stats(train_eps)
        common = dict(
            context_len=hp.context_len,
            gamma=hp.gamma,
            delayed_reward=hp.delayed_reward,
            reward_scale=hp.reward_scale,
            start_at_episode_start=hp.start_at_episode_start,
            blocks=self._block_draws(),
        )
        self.train_set = self._windows(train_eps, hp.windows_per_epoch, hp.seed, common)
        self.val_set = self._windows(val_eps, hp.val_windows, hp.seed + 1, common) if val_eps else None

    def _block_draws(self) -> BlockDraws | None:
        """``shuffle_buffer_mb`` as blocks of steps, from the stored file's bytes per step."""
        mb = self.hparams.shuffle_buffer_mb
        if not mb:
            return None
        assert self.data is not None
        size = dataset_bytes(self.hparams.dataset)
        if size is None:
            raise ConfigError(
                f"shuffle_buffer_mb needs a stored dataset; {self.hparams.dataset!r} has no file"
            )
        steps = sum(ep.length for ep in self.data.episodes)
        return BlockDraws.holding(mb * 2**20, size / steps, min_steps=self.hparams.context_len)

    def _reads_lazily(self) -> bool:
        mode = self.hparams.data_mode
        if mode != "auto":
            return mode == "lazy"
        size = dataset_bytes(self.hparams.dataset)
        return size is not None and size > self.hparams.lazy_above_mb * 2**20

    def _windows(
        self, episodes: list, num_windows: int, seed: int, common: dict[str, Any]
    ) -> TrajectoryWindows | LazyTrajectoryWindows:
        if not self.lazy:
            return TrajectoryWindows(episodes, num_windows=num_windows, seed=seed, **common)
        assert self.data is not None
        return LazyTrajectoryWindows(
            self.data.path,
            episodes,
            num_windows=num_windows,
            seed=seed,
            discrete=self.data.discrete,
            cache_bytes=int(self.hparams.cache_mb * 2**20),
            **common,
        )

    def data_spec(self) -> dict[str, Any]:
        """Everything an agent needs to build itself and to be evaluated later from its checkpoint.

        Reads the data first if needed (generating a missing built-in default, as
        :meth:`prepare_data` does), so an agent can be built before ``fit``.
        """
        if self.data is None:
            self.prepare_data()
            self.setup()
        assert self.data is not None
        hp, data = self.hparams, self.data
        env_id = hp.env_id or data.env_id
        max_len = max(e.length for e in data.episodes)
        if env_id:
            spec_steps = gym.spec(env_id).max_episode_steps or 0
            max_len = max(max_len, spec_steps)
        ref = (data.ref_min_score, data.ref_max_score)
        if ref[0] is None or ref[1] is None:
            ref = reference_for(env_id) or (None, None)
        space = data.action_space
        bounded = isinstance(space, gym.spaces.Box) and bool(
            np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))
        )
        best = max(e.total_return for e in self.train_episodes)
        return {
            "obs_dim": data.obs_dim,
            "act_dim": data.act_dim,
            "discrete": data.discrete,
            "env_id": env_id,
            "dataset": hp.dataset,
            "context_len": hp.context_len,
            "max_timestep": int(max_len) + 1,
            "reward_scale": hp.reward_scale,
            "gamma": hp.gamma,
            "delayed_reward": hp.delayed_reward,
            "action_low": space.low.astype(float).tolist() if bounded else None,
            "action_high": space.high.astype(float).tolist() if bounded else None,
            "ref_min_score": ref[0],
            "ref_max_score": ref[1],
            "target_returns": [float(best)],  # default; the agent's own target_returns take precedence
            "obs_mean": np.asarray(self.obs_mean, dtype=np.float64).tolist(),
            "obs_std": np.asarray(self.obs_std, dtype=np.float64).tolist(),
        }

    def _loader(self, dataset: TrajectoryWindows | LazyTrajectoryWindows) -> DataLoader:
        # Stateful: Lightning checkpoints the loader's position and the dataset's epoch, so a run
        # resumed mid-epoch continues the epoch's windows instead of restarting it.
        return StatefulDataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=False,  # windows are already random draws; a sampler only shards them
            collate_fn=collate_windows,
            num_workers=self.hparams.num_workers,
            # Not persistent: fresh workers each epoch see the epoch set by the agent (set_epoch).
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            # Its own generator, seeded by seed_everything: creating an iterator draws its seeds
            # from here, not from the global RNG, so creating one more loader on resume never
            # shifts dropout's draws.
            generator=torch.Generator().manual_seed(torch.initial_seed()),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set) if self.val_set is not None else []
