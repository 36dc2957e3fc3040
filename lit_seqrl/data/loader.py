"""A DataLoader whose position inside an epoch survives a checkpoint.

Lightning restarts the training dataloader from its first batch when it resumes mid-epoch (it
only restores a loader that implements ``state_dict`` / ``load_state_dict``), so a resumed run
would see batches 0.. again instead of the unseen rest of the epoch. This loader records how many
batches of the current epoch were handed out and, after ``load_state_dict``, skips that many on
its next iteration. Lightning saves the state with every checkpoint (``fit_loop`` ->
``combined_loader``) and loads it before creating the iterator.

The dataset's epoch is part of the state too: on a mid-epoch resume Lightning does not call
``on_train_epoch_start`` (where agents tell window datasets the epoch), so the loader sets it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

__all__ = ["ResumableDataLoader"]


class ResumableDataLoader(DataLoader):
    """``torch.utils.data.DataLoader`` plus Lightning's stateful-loader protocol.

    Skipped batches are drawn and discarded rather than skipped by index, so the resumed
    iteration is the uninterrupted one exactly, whatever the sampler (DDP's included); for
    in-memory window datasets drawing a batch costs microseconds.

    Unless a ``generator`` is given, the loader gets its own, seeded from torch's initial seed
    (``seed_everything``): creating an iterator then draws its worker base seed (and a shuffling
    sampler its permutation) from it instead of the global torch RNG, so how often loaders are
    created — once more when resuming — never shifts dropout or other global draws. Its state at
    the start of the epoch is saved too, so a shuffled epoch resumes in the same order.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("generator") is None:
            kwargs["generator"] = torch.Generator().manual_seed(torch.initial_seed())
        super().__init__(*args, **kwargs)
        self._batches_served = 0  # of the current iteration (epoch)
        self._skip = 0  # batches to drop at the start of the next iteration (after a resume)
        self._generator_at_start = self.generator.get_state()

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        self._batches_served = 0
        self._generator_at_start = self.generator.get_state()
        return _CountingIterator(self, super().__iter__(), skip)

    def state_dict(self) -> dict[str, Any]:
        """Dataset epoch, batches of it served, and the generator at its start and now."""
        return {
            "epoch": getattr(self.dataset, "epoch", None),
            "batches": self._batches_served,
            "generator_at_start": self._generator_at_start,
            "generator_now": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where ``state`` was taken: the next iteration continues that epoch."""
        epoch, batches = state.get("epoch"), int(state.get("batches", 0))
        try:
            finished = batches >= len(self)
        except TypeError:  # unsized (iterable) dataset: nothing to compare against
            finished = False
        generator = state.get("generator_now" if finished else "generator_at_start")
        if generator is not None:
            self.generator.set_state(generator)
        if finished:  # saved at the end of an epoch: the next one starts from its beginning
            epoch, batches = (None if epoch is None else epoch + 1), 0
        if epoch is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self._skip = batches


class _CountingIterator:
    """Wraps a DataLoader iterator: drops ``skip`` batches first, counts the batches it yields."""

    def __init__(self, loader: ResumableDataLoader, inner: Iterator[Any], skip: int) -> None:
        self.loader, self.inner = loader, inner
        for _ in range(skip):
            next(self.inner)
            loader._batches_served += 1

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> Any:
        batch = next(self.inner)
        self.loader._batches_served += 1
        return batch

    def __getattr__(self, name: str) -> Any:  # e.g. Lightning shutting down worker processes
        return getattr(self.inner, name)
