"""Context length (DT paper, Table 5): the same agent with K = 1 vs K = 20 steps of history.

The DT paper found K = 1 much worse on Atari (frame stacks are not Markov); on a Markov task
such as Pendulum the history may not matter. Every variant runs at every K of ``contexts``.

A K-step window carries K action targets, so at equal optimiser steps K = 1 sees K times fewer
targets than K. With ``equal_targets: true`` the batch of a K-step run is ``batch_size x
max(contexts) / K`` windows, so every K sees the same number of action targets per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_seqrl.experiments.runner import (
    ExperimentConfig,
    RunSpec,
    Stat,
    bar_charts_per_dataset,
    budget_line,
    fmt,
    group,
    headline,
    markdown_table,
    mean_std,
    score_key,
)


def contexts(cfg: ExperimentConfig) -> list[int]:
    return [int(k) for k in cfg.extra.get("contexts", [1, 20])]


def _data(cfg: ExperimentConfig, variant: str, k: int) -> dict[str, Any]:
    if not cfg.extra.get("equal_targets", False):
        return {"context_len": k}
    batch = int(cfg.variants[variant].get("data", {}).get("batch_size", cfg.data.get("batch_size", 64)))
    return {"context_len": k, "batch_size": batch * max(contexts(cfg)) // k}


def specs(cfg: ExperimentConfig) -> list[RunSpec]:
    return [
        cfg.run_spec(
            f"{variant}-k{k}-{dataset}",
            {"variant": variant, "dataset": dataset, "K": k},
            variant,
            dataset,
            data=_data(cfg, variant, k),
        )
        for dataset in cfg.datasets
        for variant in cfg.variants
        for k in contexts(cfg)
    ]


def report(
    cfg: ExperimentConfig, results: list[dict[str, Any]], seeds: list[int], out: Path
) -> tuple[str, list[Path]]:
    key = score_key(results)
    by_cell = group(results, "dataset", "variant", "K")
    header = ["dataset", "variant", "K", "return", "normalized score"]
    rows = []
    for (dataset, variant, k), records in by_cell.items():
        ret = mean_std([headline(r) for r in records])
        norm = mean_std([headline(r, "normalized_score") for r in records])
        rows.append([dataset, variant, str(k), fmt(ret), fmt(norm)])
    parts = ["# Context length K", "", budget_line(cfg, seeds, results), ""]
    parts += ["Returns at each dataset's target return (the first of the config's).", ""]
    parts += [markdown_table(header, rows), ""]

    def bars(dataset: str) -> dict[str, list[Stat]]:  # one bar per K for every variant
        cells = {k: [by_cell.get((dataset, v, k), []) for v in cfg.variants] for k in contexts(cfg)}
        return {f"K = {k}": [mean_std([headline(r, key) for r in rs]) for rs in c] for k, c in cells.items()}

    figures, plots = bar_charts_per_dataset(cfg, out, "context", "Context length", key, bars)
    return "\n".join(parts + figures), plots
