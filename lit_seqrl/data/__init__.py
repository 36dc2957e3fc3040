"""Offline data: episodes, return-to-go windows and the Lightning data module."""

from lit_seqrl.data.datamodule import OfflineTrajectoryDataModule

__all__ = ["OfflineTrajectoryDataModule"]
