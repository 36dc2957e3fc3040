"""Rollout evaluation during training, logged next to the losses."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class RolloutEvaluation(Callback):
    """After each validation, roll the agent out and log returns per target return.

    Runs on rank 0 only and broadcasts the numbers, so every rank logs the same values and a
    ``ModelCheckpoint(monitor="eval/return")`` agrees across ranks. ``eval/return`` and
    ``eval/normalized_score`` are those of the first target return (the headline number).
    """

    def __init__(
        self, episodes: int = 10, num_envs: int = 10, seed: int = 10_000, **eval_kwargs: Any
    ) -> None:
        self.episodes, self.num_envs, self.seed, self.eval_kwargs = episodes, num_envs, seed, eval_kwargs
        self.last_report: dict[str, Any] | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        report = None
        if trainer.is_global_zero:
            report = pl_module.evaluate_policy(self.episodes, self.num_envs, self.seed, **self.eval_kwargs)
        report = trainer.strategy.broadcast(report, src=0)
        self.last_report = report
        for i, row in enumerate(report["results"]):
            metrics = {
                k: row[k]
                for k in ("return_mean", "return_std", "length_mean", "normalized_score", "success_rate")
            }
            for key, value in metrics.items():
                if value is None:
                    continue
                pl_module.log(f"eval/target_{row['target_return']:g}/{key}", float(value))
                if i == 0 and key in ("return_mean", "normalized_score", "success_rate"):
                    pl_module.log(
                        "eval/return" if key == "return_mean" else f"eval/{key}", float(value), prog_bar=True
                    )
