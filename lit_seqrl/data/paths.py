"""Where offline datasets live: the datasets root, resolving an id or a path, and what to say
when nothing is there."""

from __future__ import annotations

from pathlib import Path

from minari.storage import get_dataset_path

from lit_seqrl.data.catalogue import DEFAULT_DATASETS
from lit_seqrl.errors import MissingInputError

__all__ = ["DatasetNotFoundError", "datasets_root", "find_data_path", "missing_message"]


class DatasetNotFoundError(MissingInputError):
    """An offline dataset is neither stored locally nor at the given path."""


def datasets_root() -> Path:
    """Directory holding minari datasets (``MINARI_DATASETS_PATH`` or minari's default), read now."""
    return get_dataset_path()


def find_data_path(source: str) -> Path | None:
    """The ``data`` directory of ``source`` (a path or an id), or None if there is none."""
    path = Path(source).expanduser()
    for candidate in (path / "data", path):
        if (candidate / "metadata.json").is_file():
            return candidate
    # An id is resolved against the root read now, so a changed MINARI_DATASETS_PATH is honoured.
    candidate = datasets_root() / source / "data"
    if (candidate / "metadata.json").is_file():
        return candidate
    return None


def missing_message(source: str) -> str:
    """How to get ``source``: generate a built-in id, download a minari id, or fix a path."""
    where = datasets_root()
    if source in DEFAULT_DATASETS:
        return f"dataset {source!r} is not generated yet under {where}; run `lit-seqrl data collect {source}`"
    looks_like_path = source.startswith((".", "/", "~")) or Path(source).expanduser().exists()
    if looks_like_path:
        return f"no minari dataset at {source!r} (expected a directory containing data/metadata.json)"
    return f"dataset {source!r} not found under {where}; run `minari download {source}`"
