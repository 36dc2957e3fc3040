"""A progress bar over episodes, drawn on stderr (stdout stays machine-readable)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(
    title: str, total: int, *, enabled: bool, transient: bool = False
) -> Iterator[Callable[[Any], None] | None]:
    """Yields ``advance(item)`` to call once per finished item, or None when not ``enabled``.

    ``transient``: the bar disappears when done (e.g. before a results table is printed).
    """
    if not enabled:
        yield None
        return
    # stderr: stdout is kept for machine-readable output (e.g. evaluate's JSON line).
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=transient) as bar:
        task = bar.add_task(title, total=total)
        yield lambda _item: bar.advance(task)
