"""Return-conditioning sweep (DT paper, Fig. 4): the return achieved vs the return asked for.

One model per (variant, dataset, seed), evaluated at every target of the dataset's ``targets``
list (default: eight targets from the worst return in the data to 20% beyond its best). A
return-conditioned agent should follow ``y = x`` inside the data's range and flatten beyond the
best return it has seen; BC variants ignore the target and draw a flat line for reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lit_seqrl.experiments.runner import (
    ExperimentConfig,
    RunSpec,
    budget_line,
    dataset_returns,
    fmt,
    group,
    markdown_table,
    mean_std,
    pyplot,
    rows_by_target,
    slug,
)


def targets_for(cfg: ExperimentConfig, dataset: str) -> list[float]:
    given = cfg.datasets.get(dataset, {}).get("targets")
    if given:
        return [float(t) for t in given]
    returns = dataset_returns(dataset)
    lo, hi = float(returns.min()), float(returns.max())
    return [float(t) for t in np.linspace(lo, hi + 0.2 * (hi - lo), 8)]


def specs(cfg: ExperimentConfig) -> list[RunSpec]:
    out = []
    for dataset in cfg.datasets:
        targets = targets_for(cfg, dataset)
        for variant in cfg.variants:
            labels = {"variant": variant, "dataset": dataset}
            out.append(cfg.run_spec(f"{variant}-{dataset}", labels, variant, dataset, targets=targets))
    return out


def _achieved(records: list[dict[str, Any]], target: float) -> tuple[float, float, int] | None:
    """Mean ± std over seeds of the return at ``target`` (BC: its only row)."""
    values = []
    for record in records:
        rows = rows_by_target(record)
        row = (
            rows.get(target)
            if record["report"].get("return_conditioned", True)
            else next(iter(rows.values()))
        )
        values.append(None if row is None else row["return_mean"])
    return mean_std(values)


def report(
    cfg: ExperimentConfig, results: list[dict[str, Any]], seeds: list[int], out: Path
) -> tuple[str, list[Path]]:
    by_cell = group(results, "dataset", "variant")
    parts = ["# Return conditioning: achieved vs target return", "", budget_line(cfg, seeds, results), ""]
    plots = []
    for dataset in cfg.datasets:
        cells = {v: by_cell.get((dataset, v), []) for v in cfg.variants}
        targets = targets_for(cfg, dataset)
        best = max(r["dataset_best_return"] for recs in cells.values() for r in recs)
        parts += [
            f"## {dataset}",
            "",
            f"Best return in the training episodes: {best:.1f}. BC variants ignore the target "
            "(the same value in every row).",
            "",
        ]
        rows = [[f"{t:g}"] + [fmt(_achieved(cells[v], t)) for v in cfg.variants] for t in targets]
        parts += [markdown_table(["target return", *cfg.variants], rows), ""]
        path = _plot(cells, targets, best, dataset, out / f"conditioning-{slug(dataset)}.png")
        if path is not None:
            plots.append(path)
            parts += [f"![conditioning on {dataset}]({path.name})", ""]
    return "\n".join(parts), plots


def _plot(
    cells: dict[str, list[dict[str, Any]]], targets: list[float], best: float, dataset: str, path: Path
) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    t = np.array(targets)
    ax.plot(t, t, "k--", lw=1, label="y = x")
    ax.axhline(best, color="grey", ls=":", lw=1, label=f"best return in data ({best:.1f})")
    ax.axvline(best, color="grey", ls=":", lw=1)
    for variant, records in cells.items():
        stats = [_achieved(records, target) for target in targets]
        mean = np.array([np.nan if s is None else s[0] for s in stats])
        std = np.array([np.nan if s is None else s[1] for s in stats])
        (line,) = ax.plot(t, mean, marker="o", ms=3, label=variant)
        ax.fill_between(t, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("target return")
    ax.set_ylabel("achieved return (mean ± std over seeds)")
    ax.set_title(f"Return conditioning: {dataset}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
