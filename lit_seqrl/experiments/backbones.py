"""Backbones side by side: DT, Decision Mamba, DS4, DC, MambaDM, BC and %BC on the same data.

Every variant trains with the same budget, context and evaluation seeds on every dataset of the
config (or of ``--dataset``); the table reports the normalised score where the data has
reference returns, else the raw return, at each dataset's target return. A dataset entry with a
``targets`` list is evaluated at all of them (the same runs as ``conditioning``'s, so an ``--out``
shared by the two experiments trains each cell once); the table still reports ``target_return``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lit_seqrl.experiments.runner import (
    ExperimentConfig,
    RunSpec,
    bar_chart,
    budget_line,
    fmt,
    group,
    headline,
    markdown_table,
    mean_std,
    rows_by_target,
    score_key,
)


def specs(cfg: ExperimentConfig) -> list[RunSpec]:
    out = []
    for dataset in cfg.datasets:
        given = cfg.datasets[dataset].get("targets")
        targets = [float(t) for t in given] if given else None
        for variant in cfg.variants:
            labels = {"variant": variant, "dataset": dataset}
            out.append(cfg.run_spec(f"{variant}-{dataset}", labels, variant, dataset, targets=targets))
    return out


def _score(record: dict[str, Any], key: str, target: float | None) -> float | None:
    """The score at ``target`` when the run was evaluated there, else its first row's (BC's only row)."""
    row = rows_by_target(record).get(None if target is None else float(target))
    if row is None or not record["report"].get("return_conditioned", True):
        return headline(record, key)
    value = row.get(key)
    return None if value is None else float(value)


def report(
    cfg: ExperimentConfig, results: list[dict[str, Any]], seeds: list[int], out: Path
) -> tuple[str, list[Path]]:
    key = score_key(results)
    by_cell = group(results, "variant", "dataset")
    what = "normalized score" if key == "normalized_score" else "return"
    datasets, variants = list(cfg.datasets), list(cfg.variants)
    cells = {  # variant -> a score statistic per dataset: the table's cells and the chart's bars
        v: [
            mean_std([_score(r, key, cfg.datasets[d].get("target_return")) for r in by_cell.get((v, d), [])])
            for d in datasets
        ]
        for v in variants
    }
    rows = []
    for variant in variants:
        backbone = cfg.variants[variant]["backbone"]["name"]
        seconds = [r["train_seconds"] for d in datasets for r in by_cell.get((variant, d), [])]
        rows.append([variant, backbone, *(fmt(c) for c in cells[variant]), f"{np.mean(seconds):.0f}"])
    parts = ["# Backbones", "", budget_line(cfg, seeds, results), ""]
    parts += [
        f"{what.capitalize()} at each dataset's target return; last column: mean training seconds per run.",
        "",
    ]
    parts += [markdown_table(["variant", "backbone", *datasets, "train s"], rows), ""]
    plots = []
    size = (max(6.0, 2 + 2.5 * len(datasets)), 4.5)
    path = bar_chart(
        out / "backbones.png",
        datasets,
        cells,
        key,
        "Backbones (mean ± std over seeds)",
        size,
        legend_columns=2,
    )
    if path is not None:
        plots.append(path)
        parts += [f"![backbones]({path.name})", ""]
    return "\n".join(parts), plots
