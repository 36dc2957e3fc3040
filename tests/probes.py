"""Callbacks that tests plug into ``lit-seqrl fit`` subprocesses to observe training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class WindowRecorder(Callback):
    """Writes, per rank, a fingerprint of every training window it saw to ``out_dir/rank<R>.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.seen = Path(out_dir), []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        # Expert windows can repeat the same upright observations; the return-to-go and the
        # timesteps tell episodes and positions apart.
        for i in range(batch["mask"].shape[0]):
            parts = (
                batch[k][i].cpu().numpy().tobytes() for k in ("observations", "returns_to_go", "timesteps")
            )
            self.seen.append(hashlib.sha1(b"".join(parts)).hexdigest())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        train_set = getattr(trainer.datamodule, "train_set", None)
        payload = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "windows": self.seen,
            "dataset": type(train_set).__name__,
            "episodes_read": getattr(train_set, "reads", None),  # lazy data only
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(payload))


class EvalRecorder(Callback):
    """Writes, per rank, the last rollout-evaluation report it logged to ``out_dir/eval<R>.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reports = [getattr(cb, "last_report", None) for cb in trainer.callbacks]
        reports = [r for r in reports if r is not None]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        payload = {"rank": trainer.global_rank, "reports": reports}
        (self.out_dir / f"eval{trainer.global_rank}.json").write_text(json.dumps(payload, default=str))


class OnlineRecorder(Callback):
    """Per rank: the collector's seed, a fingerprint of its replay buffer, and one of the weights.

    Written to ``out_dir/online<R>.json`` when training ends (for online Q-learning agents).
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        collector = pl_module._collector
        replay = hashlib.sha1()
        for episode in collector.buffer._episodes:
            replay.update(episode.observations.tobytes() + episode.final_observation.tobytes())
            replay.update(episode.actions.tobytes())
        weights = hashlib.sha1()
        for tensor in pl_module.q_net.state_dict().values():
            weights.update(tensor.detach().cpu().numpy().tobytes())
        payload = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "seed": collector.seed,
            "env_steps": collector.env_steps,
            "replay": replay.hexdigest(),
            "replay_size": len(collector.buffer),
            "weights": weights.hexdigest(),
            "global_step": trainer.global_step,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"online{trainer.global_rank}.json").write_text(json.dumps(payload))
