"""Dense vs delayed rewards (DT paper, Table 7): DT, BC and %BC.

"Delayed" moves each episode's whole return to its last step (``delayed_reward=True``), so the
return-to-go is constant within an episode. DT needs only the return-to-go, so it should barely
notice; TD-based methods collapse (not run here). BC and %BC never read rewards (%BC ranks
episodes by their total return, which the delay keeps), so they are trained once and their
number is reported in both columns.
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

SETTINGS = ("dense", "delayed")


def _reads_rewards(cfg: ExperimentConfig, variant: str) -> bool:
    return cfg.variants[variant].get("agent", "dt") != "bc"


def specs(cfg: ExperimentConfig) -> list[RunSpec]:
    out = []
    for dataset in cfg.datasets:
        for variant in cfg.variants:
            for setting in SETTINGS if _reads_rewards(cfg, variant) else ("dense",):
                out.append(
                    cfg.run_spec(
                        f"{variant}-{setting}-{dataset}",
                        {"variant": variant, "dataset": dataset, "rewards": setting},
                        variant,
                        dataset,
                        data={"delayed_reward": setting == "delayed"},
                    )
                )
    return out


def _stat(cfg: ExperimentConfig, by_cell: dict, dataset: str, variant: str, setting: str, key: str) -> Any:
    if not _reads_rewards(cfg, variant):
        setting = "dense"  # the same run: BC never sees rewards
    return mean_std([headline(r, key) for r in by_cell.get((dataset, variant, setting), [])])


def report(
    cfg: ExperimentConfig, results: list[dict[str, Any]], seeds: list[int], out: Path
) -> tuple[str, list[Path]]:
    key = score_key(results)
    by_cell = group(results, "dataset", "variant", "rewards")
    what = "normalized score" if key == "normalized_score" else "return"
    parts = ["# Dense vs delayed rewards", "", budget_line(cfg, seeds, results), ""]
    parts += [
        f"{what.capitalize()} at each dataset's target return; BC variants: one run shown in both columns.",
        "",
    ]
    rows = []
    for dataset in cfg.datasets:
        for variant in cfg.variants:
            rows.append(
                [dataset, variant] + [fmt(_stat(cfg, by_cell, dataset, variant, s, key)) for s in SETTINGS]
            )
    parts += [markdown_table(["dataset", "variant", f"dense ({what})", f"delayed ({what})"], rows), ""]

    def bars(dataset: str) -> dict[str, list[Stat]]:  # dense and delayed for every variant
        return {s: [_stat(cfg, by_cell, dataset, v, s, key) for v in cfg.variants] for s in SETTINGS}

    figures, plots = bar_charts_per_dataset(cfg, out, "delayed", "Dense vs delayed rewards", key, bars)
    return "\n".join(parts + figures), plots
