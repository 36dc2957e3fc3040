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

import numpy as np

from lit_seqrl.experiments.runner import (
    ExperimentConfig,
    RunSpec,
    budget_line,
    fmt,
    group,
    headline,
    markdown_table,
    mean_std,
    pyplot,
    score_key,
    slug,
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
    plots = []
    for dataset in cfg.datasets:
        path = _plot(cfg, by_cell, dataset, key, out / f"delayed-{slug(dataset)}.png")
        if path is not None:
            plots.append(path)
            parts += [f"![dense vs delayed rewards on {dataset}]({path.name})", ""]
    return "\n".join(parts), plots


def _plot(cfg: ExperimentConfig, by_cell: dict, dataset: str, key: str, path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    variants = list(cfg.variants)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 1.6 * len(variants)), 4))
    for j, setting in enumerate(SETTINGS):
        stats = [_stat(cfg, by_cell, dataset, v, setting, key) for v in variants]
        x = np.arange(len(variants)) + (j - 0.5) * 0.4
        ax.bar(
            x,
            [np.nan if s is None else s[0] for s in stats],
            0.4,
            yerr=[0 if s is None else s[1] for s in stats],
            capsize=3,
            label=setting,
        )
    ax.set_xticks(np.arange(len(variants)), variants)
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(f"Dense vs delayed rewards: {dataset}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
