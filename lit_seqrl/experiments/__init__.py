"""Experiments from the Decision Transformer paper and its successors, one command each.

    lit-seqrl experiment conditioning --config configs/experiments/conditioning.yaml --seeds 3

* ``conditioning`` — achieved vs target return over a range of targets (DT paper, Fig. 4);
* ``context`` — context length K = 1 vs K = 20 (DT paper, Table 5);
* ``delayed`` — DT vs BC vs %BC with dense and delayed rewards (DT paper, Table 7);
* ``backbones`` — DT, Decision Mamba, DS4, DC, MambaDM, BC and %BC on the same datasets.

Each writes ``results.md`` (a Markdown table, mean ± std over seeds), PNG plots and
``summary.json`` under ``--out`` (default ``runs/experiments/<name>``); per-seed results are cached
under ``runs/`` there, so a rerun skips finished seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

from lit_seqrl.errors import ConfigError
from lit_seqrl.experiments import backbones, conditioning, context, delayed
from lit_seqrl.experiments.runner import ExperimentConfig, run_all

EXPERIMENTS: dict[str, ModuleType] = {
    "conditioning": conditioning,
    "context": context,
    "delayed": delayed,
    "backbones": backbones,
}

__all__ = ["EXPERIMENTS", "ExperimentConfig", "run_experiment"]


def run_experiment(
    name: str,
    config: str | Path,
    seeds: int = 3,
    max_steps: int | None = None,
    out: str | Path | None = None,
    datasets: list[str] | None = None,
    eval_episodes: int | None = None,
    variants: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run experiment ``name`` and write its report; returns ``{"markdown", "plots", "results"}``.

    ``datasets`` replaces the config's datasets (ids the config does not describe use the data's
    defaults: reward scale of the config's ``data`` section, target = the best return in the data);
    ``variants`` keeps only those of the config's variants.
    """
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    module = EXPERIMENTS[name]
    cfg = ExperimentConfig.load(config)
    if max_steps is not None:
        cfg.max_steps = max_steps
    if eval_episodes is not None:
        cfg.eval_episodes = eval_episodes
    if datasets:
        cfg.datasets = {d: cfg.datasets.get(d, {}) for d in datasets}
    if variants:
        unknown = sorted(set(variants) - set(cfg.variants))
        if unknown:
            raise ConfigError(f"{config}: no variants {unknown}; the config has {sorted(cfg.variants)}")
        cfg.variants = {v: cfg.variants[v] for v in cfg.variants if v in variants}
    if not cfg.datasets or not cfg.variants:
        raise ConfigError(f"{config}: an experiment config needs 'datasets' and 'variants'")
    out_dir = Path(out or Path("runs") / "experiments" / name)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(seeds))
    results = run_all(module.specs(cfg), seed_list, out_dir, progress=progress)
    markdown, plots = module.report(cfg, results, seed_list, out_dir)
    (out_dir / "results.md").write_text(markdown + "\n")
    summary = {"experiment": name, "config": str(config), "seeds": seed_list, "runs": results}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"markdown": markdown, "plots": [str(p) for p in plots], "results": results, "out": str(out_dir)}
