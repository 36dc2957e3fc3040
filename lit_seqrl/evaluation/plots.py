"""``lit-seqrl plot``: learning curves from TensorBoard event files, as PNGs.

A *run* is a directory holding event files (Lightning's ``<root>/lightning_logs/version_N``).
Runs are grouped — seeds of one configuration — and each group is drawn as its mean over runs
with a ±1 std band (a single run is drawn as a plain line). Grouping rules:

* ``parent``: runs whose roots share a parent directory (``runs/dt/seed0``, ``runs/dt/seed1`` -> ``dt``);
* ``root``: runs under one root (several ``version_N`` of the same command -> one group);
* ``prefix``: the root's name without a trailing seed number (``dt_seed0``, ``dt-s1``, ``dt2`` -> ``dt``);
* ``none``: every run on its own.

A run's *root* is its directory with Lightning's ``lightning_logs/version_N`` levels removed, i.e.
what was passed as ``--trainer.default_root_dir``. matplotlib (the ``plot`` extra) is imported
only here, with the Agg canvas, so nothing needs a display.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from lit_seqrl.errors import ConfigError, MissingInputError

__all__ = [
    "DEFAULT_TAGS",
    "PlotDependencyError",
    "Run",
    "find_runs",
    "group_runs",
    "mean_std",
    "plot_runs",
    "read_scalars",
]

GroupRule = Literal["parent", "root", "prefix", "none"]
# Plotted when present: losses, the headline evaluation numbers, and online agents' returns.
DEFAULT_TAGS = (
    "train/loss",
    "val/loss",
    "eval/return",
    "eval/normalized_score",
    "eval/success_rate",
    "train/episode_return",
)
_EVENT_FILE = re.compile(r"events\.out\.tfevents\.")
_VERSION_DIR = re.compile(r"version_\d+")
_SEED_SUFFIX = re.compile(r"[-_.]?(?:seed|s)?\d+$")


class PlotDependencyError(ImportError):
    """matplotlib, needed by ``lit-seqrl plot``, is not installed."""


@dataclass
class Run:
    """One run's scalars: tag -> (steps (S,) int64, values (S,) float64), sorted by step."""

    path: Path
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The run directory without Lightning's ``lightning_logs/version_N`` levels."""
        path = self.path
        if path.parent.name == "lightning_logs":  # any version name, e.g. a fixed one for resuming
            return path.parent.parent
        if _VERSION_DIR.fullmatch(path.name):  # a logger with its own name: <root>/<name>/version_N
            path = path.parent
        return path


def find_runs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Directories holding event files under each of ``paths`` (a run directory or any parent).

    Raises FileNotFoundError for a missing path, ValueError for a path without event files.
    """
    runs: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.is_dir():
            raise MissingInputError(f"no such directory: {raw}")
        found = sorted({p.parent for p in path.rglob("events.out.tfevents.*") if p.is_file()})
        if not found:
            raise ConfigError(f"no TensorBoard event files under {raw}")
        runs.extend(p for p in found if p not in runs)
    return runs


def read_scalars(run_dir: str | os.PathLike, tags: Sequence[str] | None = None) -> Run:
    """All scalar series of one run directory, read with TensorBoard's EventAccumulator.

    Several event files in one directory (a resumed run) are read as one series; TensorBoard
    drops the points a restart re-logged. If a step still repeats, its last value is kept.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.fspath(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    run = Run(Path(run_dir))
    for tag in acc.Tags().get("scalars", []):
        if tags is not None and tag not in tags:
            continue
        events = acc.Scalars(tag)
        steps = np.array([e.step for e in events], dtype=np.int64)
        values = np.array([e.value for e in events], dtype=np.float64)
        # Stable sort by step, then keep the last of each step (the most recently written).
        order = np.argsort(steps, kind="stable")
        steps, values = steps[order], values[order]
        last = np.r_[steps[1:] != steps[:-1], True]
        run.scalars[tag] = (steps[last], values[last])
    return run


def group_runs(runs: Sequence[Run], rule: GroupRule = "parent") -> dict[str, list[Run]]:
    """Runs by group label (see the module doc for the rules), in first-seen order."""
    if rule not in ("parent", "root", "prefix", "none"):
        raise ConfigError(f"group must be parent, root, prefix or none, got {rule!r}")
    keys: list[Path] = []
    for run in runs:
        if rule == "parent":
            keys.append(run.root.parent)
        elif rule == "root":
            keys.append(run.root)
        elif rule == "prefix":
            stem = _SEED_SUFFIX.sub("", run.root.name) or run.root.name
            keys.append(run.root.parent / stem)
        else:
            keys.append(run.path)
    labels = _short_labels(keys)
    groups: dict[str, list[Run]] = {}
    for run, key in zip(runs, keys):
        groups.setdefault(labels[key], []).append(run)
    return groups


def mean_std(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std across runs of (steps, values) curves -> (steps (S,), mean (S,), std (S,)).

    Runs logged at the same steps are averaged point by point; otherwise every curve is
    interpolated onto the union of their steps within the range all of them cover.
    """
    if len(curves) == 1:
        steps, values = curves[0]
        return steps, values, np.zeros_like(values)
    first = curves[0][0]
    if all(len(s) == len(first) and np.array_equal(s, first) for s, _ in curves):
        grid, stack = first, np.stack([v for _, v in curves])
    else:
        lo, hi = max(s[0] for s, _ in curves), min(s[-1] for s, _ in curves)
        grid = np.unique(np.concatenate([s[(s >= lo) & (s <= hi)] for s, _ in curves]))
        stack = np.stack([np.interp(grid, s, v) for s, v in curves])
    return grid, stack.mean(axis=0), stack.std(axis=0)


def plot_runs(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike = "plots",
    group: GroupRule = "parent",
    tags: Sequence[str] = DEFAULT_TAGS,
    smooth: float = 0.0,
) -> list[Path]:
    """Write one PNG per tag (``train/loss`` -> ``train_loss.png``) to ``out_dir``; return the paths.

    ``smooth`` in [0, 1) is TensorBoard-style exponential smoothing applied to each run before
    averaging (0 = raw values).
    """
    if not 0.0 <= smooth < 1.0:
        raise ConfigError(f"smooth must be in [0, 1), got {smooth}")
    figure_cls = _figure_class()  # fail before reading anything if matplotlib is missing
    runs = [read_scalars(p) for p in find_runs(paths)]
    present = [t for t in tags if any(t in r.scalars for r in runs)]
    if not present:
        logged = sorted({t for r in runs for t in r.scalars}) or ["nothing"]
        raise ConfigError(f"the runs logged none of {list(tags)}; they logged: {', '.join(logged)}")
    groups = group_runs(runs, group)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for tag in present:
        fig = figure_cls(figsize=(7, 4.2), dpi=110)
        ax = fig.add_subplot()
        for color, (label, members) in zip(_colors(len(groups)), groups.items()):
            curves = [_ema(*r.scalars[tag], smooth) for r in members if tag in r.scalars]
            if not curves:
                continue
            steps, mean, std = mean_std(curves)
            ax.plot(steps, mean, color=color, lw=1.6, label=f"{label} (n={len(curves)})")
            if len(curves) > 1:
                ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        ax.set_title(tag + (" (mean ± std over runs)" if any(len(g) > 1 for g in groups.values()) else ""))
        ax.set_xlabel("step")
        ax.set_ylabel(tag.rsplit("/", 1)[-1])
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
        fig.tight_layout()
        path = out / (tag.replace("/", "_") + ".png")
        fig.savefig(path)
        written.append(path)
    return written


def _figure_class() -> type:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401  (Agg: no display)
        from matplotlib.figure import Figure
    except ImportError as err:
        raise PlotDependencyError('lit-seqrl plot needs matplotlib: pip install "lit-seqrl[plot]"') from err
    # A bare Figure draws with the Agg canvas and leaves pyplot's global backend alone.
    return Figure


def _ema(steps: np.ndarray, values: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
    if weight == 0.0 or len(values) < 2:
        return steps, values
    out, acc = np.empty_like(values), values[0]
    for i, v in enumerate(values):
        acc = weight * acc + (1 - weight) * v
        out[i] = acc
    return steps, out


def _short_labels(keys: Sequence[Path]) -> dict[Path, str]:
    """Group keys relative to their common ancestor ('dt', 's4/long'), or their names."""
    unique = list(dict.fromkeys(keys))
    if len(unique) == 1:
        return {unique[0]: unique[0].name or str(unique[0])}
    common = Path(os.path.commonpath([str(k) for k in unique]))
    return {k: (k.relative_to(common).as_posix() if k != common else k.name) for k in unique}


def _colors(n: int) -> list[str]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    return [palette[i % len(palette)] for i in range(n)]
