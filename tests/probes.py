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
        payload = {"rank": trainer.global_rank, "world_size": trainer.world_size, "windows": self.seen}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(payload))
