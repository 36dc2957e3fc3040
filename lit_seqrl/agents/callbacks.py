"""Training callbacks every agent attaches: exact resume of random state, and a non-finite loss stop."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_seqrl.errors import ConfigError

__all__ = ["LatestCheckpoint", "NonFiniteLossError", "RNGStateCheckpoint", "StopOnNonFiniteLoss"]


class NonFiniteLossError(ConfigError):
    """The training loss became NaN or infinite; training stopped before applying that step.

    A :class:`~lit_seqrl.errors.ConfigError`, so the command line reports it as one line: a NaN
    loss almost always comes from the data or the hyper-parameters, and the message says so.
    """


class StopOnNonFiniteLoss(Callback):
    """Stop training, naming the step, as soon as the loss is NaN or infinite.

    The check runs before the backward pass, so the weights never see the bad step and no
    checkpoint is written after it: the last checkpoint on disk is the last good state. Under DDP
    the ranks agree first (one small all-reduce), so they all stop together instead of the
    healthy ones waiting forever in the gradient all-reduce. (Lightning's ``detect_anomaly``
    finds the op that made the NaN but slows every step several times over.)
    """

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        value = loss.detach().float().cpu().reshape(-1)[0].item()
        last = _last_checkpoint(trainer)
        kept = f"the last checkpoint, {last}, is from before it" if last else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"training loss is {value} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"training stopped before that update and {kept}. Lower the learning rate or check the data "
            "(lit-seqrl data info)"
        )


class RNGStateCheckpoint(Callback):
    """Save the global random states with each checkpoint; restore them when training resumes.

    Lightning checkpoints do not hold the python / numpy / torch (CPU and CUDA) generators, so a
    resumed run would draw different dropout masks from the uninterrupted one. The states are
    taken when the checkpoint is written and put back right before the first training batch after
    a resume (after the sanity check and dataloader set-up, which the uninterrupted run did not do
    at that point). Under DDP every rank gets rank 0's states: ``seed_everything`` seeds all ranks
    alike and they draw alike, so their generators are equal anyway.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        cuda = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else []
        )
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        # Plain ints and tensors only: Lightning loads checkpoints with torch.load(weights_only=True).
        return {
            "python": random.getstate(),
            "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached)),
            "torch": torch.get_rng_state(),
            "cuda": cuda,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        random.setstate(state["python"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class LatestCheckpoint(Callback):
    """Keep ``last.ckpt`` at the newest weights: every ``every_n_train_steps`` steps (0: never),
    after every validation, and when fit ends.

    Lightning's ``save_last`` refreshes ``last.ckpt`` only when its ModelCheckpoint writes a top-k
    checkpoint, so beside a monitored best-model checkpoint it would hold the weights of the last
    improvement, not the final ones that ``evaluate --ckpt_path …/last.ckpt`` and ``--ckpt_path
    last`` expect. The file goes to ``checkpoint``'s folder, and ``checkpoint.last_model_path``
    points at it.
    """

    def __init__(self, checkpoint: ModelCheckpoint, every_n_train_steps: int = 0) -> None:
        self.checkpoint, self.every = checkpoint, every_n_train_steps
        self._saved_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.every > 0 and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        folder = self.checkpoint.dirpath
        if trainer.fast_dev_run or folder is None or trainer.global_step == self._saved_step:
            return
        path = Path(folder) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)  # every rank calls it; only rank 0 writes
        self.checkpoint.last_model_path, self._saved_step = str(path), trainer.global_step


def _last_checkpoint(trainer: L.Trainer) -> str | None:
    """The most recently written checkpoint of any ModelCheckpoint, if one exists on disk."""
    paths = set()
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint):
            paths.update(p for p in (cb.last_model_path, cb.best_model_path) if p and Path(p).is_file())
    return max(paths, key=lambda p: Path(p).stat().st_mtime) if paths else None
