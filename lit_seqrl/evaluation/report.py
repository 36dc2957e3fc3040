"""Human-readable evaluation tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

_COLUMNS = ("target_return", "return_mean", "return_std", "length_mean", "normalized_score", "success_rate")


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """Print ``{"episodes", "mode", "results": [...]}`` as a table (columns that are all empty are left out)."""
    rows = report["results"]
    columns = [c for c in _COLUMNS if any(r.get(c) is not None for r in rows)]
    title = f"{report.get('env_id', '')}: {report['episodes']} episodes per row, {report['mode']} mode"
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(
            *(
                "-" if r.get(c) is None else f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c])
                for c in columns
            )
        )
    (console or Console(stderr=False)).print(table)
