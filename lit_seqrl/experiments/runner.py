"""What every experiment shares: the config, one training run per (cell, seed), caching, tables.

An experiment is a grid of *cells* (a variant on a dataset under a setting), each trained and
evaluated once per seed with the same machinery as ``lit-seqrl fit`` (``lightning.Trainer`` +
``DecisionAgent``/``BCAgent`` + ``OfflineTrajectoryDataModule``). A finished run writes
``<out>/runs/<cell>/seed<k>.json``; a later invocation skips every seed whose file exists and was
made with the same run settings, so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import yaml
from lightning.pytorch.callbacks import Callback

from lit_seqrl.agents import BCAgent, DecisionAgent
from lit_seqrl.data import OfflineTrajectoryDataModule
from lit_seqrl.data.collect import ensure_dataset
from lit_seqrl.data.episodes import load_offline_dataset
from lit_seqrl.errors import ConfigError

AGENTS = {"dt": "lit_seqrl.agents.DecisionAgent", "bc": "lit_seqrl.agents.BCAgent"}
_TOP_KEYS = {
    "max_steps",
    "eval_episodes",
    "eval_num_envs",
    "datasets",
    "data",
    "model",
    "trainer",
    "variants",
}


@dataclass
class RunSpec:
    """Everything one training run depends on (and nothing else: it keys the result cache)."""

    cell: str  # directory name of the cell, e.g. "dt-pendulum-mixed"
    labels: dict[str, Any]  # what the report groups by: {"variant": "DT", "dataset": ...}
    agent: str  # "dt" | "bc"
    dataset: str
    model: dict[str, Any]
    data: dict[str, Any]
    trainer: dict[str, Any]
    max_steps: int
    eval_episodes: int
    eval_num_envs: int
    target_returns: list[float] | None  # None: the data's default (its best return)
    seed: int = 0

    def key(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # JSON-normalised, comparable with a stored one


@dataclass
class ExperimentConfig:
    """An experiment's YAML: shared settings plus the ``variants`` it compares.

    ``datasets`` maps dataset id -> per-dataset overrides (``reward_scale``, ``target_return``);
    ``data``/``model``/``trainer`` are the data module's / agent's / Trainer's keyword arguments;
    each variant has ``agent`` (dt | bc), ``backbone`` and optional ``model``/``data`` overrides.
    Any further top-level keys (``targets``, ``contexts``, ...) are the experiment's own.
    """

    max_steps: int = 1000
    eval_episodes: int = 10
    eval_num_envs: int = 10
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: an experiment config must be a mapping")
        known = {k: raw[k] for k in _TOP_KEYS if k in raw}
        cfg = cls(**known, extra={k: v for k, v in raw.items() if k not in _TOP_KEYS})
        cfg.datasets = {k: dict(v or {}) for k, v in (cfg.datasets or {}).items()}
        for name, variant in cfg.variants.items():
            unknown = set(variant) - {"agent", "backbone", "model", "data"}
            if unknown:
                raise ConfigError(f"{path}: variant {name!r} has unknown keys {sorted(unknown)}")
            if variant.get("agent", "dt") not in AGENTS:
                raise ConfigError(f"{path}: variant {name!r}: agent must be one of {sorted(AGENTS)}")
        return cfg

    def run_spec(
        self,
        cell: str,
        labels: dict[str, Any],
        variant: str,
        dataset: str,
        data: dict[str, Any] | None = None,
        targets: list[float] | None = None,
    ) -> RunSpec:
        """The run of ``variant`` on ``dataset`` with ``data`` overrides (seed filled in later)."""
        v = self.variants[variant]
        ds = self.datasets.get(dataset, {})
        data_kwargs = {**self.data, **({"reward_scale": ds["reward_scale"]} if "reward_scale" in ds else {})}
        data_kwargs.update(v.get("data", {}))
        data_kwargs.update(data or {})
        model = {**self.model, **v.get("model", {}), "backbone": dict(v["backbone"])}
        if targets is None and "target_return" in ds:
            targets = [float(ds["target_return"])]
        return RunSpec(
            cell=slug(cell),
            labels=labels,
            agent=v.get("agent", "dt"),
            dataset=dataset,
            model=copy.deepcopy(model),
            data=data_kwargs,
            trainer=dict(self.trainer),
            max_steps=self.max_steps,
            eval_episodes=self.eval_episodes,
            eval_num_envs=self.eval_num_envs,
            target_returns=targets,
        )


def slug(text: str) -> str:
    """A file-name-safe version of ``text`` (``"%BC (10%)"`` -> ``"pctbc-10pct"``)."""
    text = text.replace("%", "pct").lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "run"


# ----------------------------------------------------------------------------- one run
@contextmanager
def _quiet() -> Iterator[None]:
    """Silence Lightning's banner lines and its (and torch's) warnings while our progress bar runs;
    lit_seqrl's own warnings (e.g. a backbone option dropped) still show."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(lightning|torch)(\.|$)")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def train_and_evaluate(spec: RunSpec, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train ``spec`` for ``max_steps`` optimiser steps, then roll it out; returns the result record."""

    class _Progress(Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if on_step is not None:
                on_step(trainer.global_step)

    with _quiet():
        L.seed_everything(spec.seed, workers=True, verbose=False)
        dm = OfflineTrajectoryDataModule(dataset=spec.dataset, seed=spec.seed, **spec.data)
        cls = BCAgent if spec.agent == "bc" else DecisionAgent
        # Rollouts only after training (eval_episodes=0 in fit): budgets here are in optimiser steps.
        agent = cls(**{**spec.model, "eval_episodes": 0, "data_spec": dm.data_spec()})
        trainer = L.Trainer(
            max_steps=spec.max_steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[_Progress()],
            **{"accelerator": "cpu", "gradient_clip_val": 0.25, **spec.trainer},
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.fit(agent, datamodule=dm)
        train_seconds = time.perf_counter() - start
        # CPU seconds of this process: on a shared machine, closer to the time on dedicated cores.
        train_cpu_seconds = time.process_time() - cpu_start
        start = time.perf_counter()
        # Evaluation episodes use seeds disjoint from the data's (which start at 0) and shared by
        # every variant, so variants face the same start states.
        report = agent.evaluate_policy(
            episodes=spec.eval_episodes,
            num_envs=spec.eval_num_envs,
            seed=1_000_000 + 1000 * spec.seed,
            target_returns=spec.target_returns,
        )
        eval_seconds = time.perf_counter() - start
    returns = [ep.total_return for ep in dm.train_episodes]
    return {
        "spec": spec.key(),
        "report": report,
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "eval_seconds": eval_seconds,  # every target's episodes together
        "steps": int(trainer.global_step),
        "dataset_best_return": float(max(returns)),
        "dataset_mean_return": float(np.mean(returns)),
        "train_episodes": len(returns),
    }


def run_all(specs: list[RunSpec], seeds: list[int], out: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Every spec for every seed, skipping runs whose result file exists with the same spec."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    jobs = []
    for spec in specs:
        for seed in seeds:
            s = copy.deepcopy(spec)
            s.seed = seed
            jobs.append((s, out / "runs" / s.cell / f"seed{seed}.json"))
    results: list[dict[str, Any]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        overall = bar.add_task("runs", total=len(jobs))
        for spec, path in jobs:
            cached = _load_cached(path, spec)
            if cached is None:
                task = bar.add_task(f"{spec.cell} seed {spec.seed}", total=spec.max_steps)
                cached = train_and_evaluate(spec, on_step=lambda n, t=task: bar.update(t, completed=n))
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(cached, indent=1))
                tmp.replace(path)  # atomic: a killed run leaves no half-written result
                bar.remove_task(task)
            results.append(cached)
            bar.advance(overall)
    return results


def _load_cached(path: Path, spec: RunSpec) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if record.get("spec") != spec.key():
        warnings.warn(f"{path} was made with other settings; running it again", UserWarning, stacklevel=3)
        return None
    return record


# ----------------------------------------------------------------------------- aggregation
def dataset_returns(dataset: str) -> np.ndarray:
    """Episode returns of ``dataset`` (a built-in default is generated first if missing)."""
    ensure_dataset(dataset)
    return np.array([ep.total_return for ep in load_offline_dataset(dataset).episodes])


def group(results: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Records grouped by the values of their run labels ``keys``, in first-seen order."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in results:
        labels = record["spec"]["labels"]
        out.setdefault(tuple(labels[k] for k in keys), []).append(record)
    return out


def score_key(results: list[dict[str, Any]]) -> str:
    """``normalized_score`` when every run has one (datasets with reference returns), else ``return_mean``."""
    rows = [row for r in results for row in r["report"]["results"]]
    return (
        "normalized_score" if all(row.get("normalized_score") is not None for row in rows) else "return_mean"
    )


def rows_by_target(record: dict[str, Any]) -> dict[float | None, dict[str, Any]]:
    return {r["target_return"]: r for r in record["report"]["results"]}


def headline(record: dict[str, Any], key: str = "return_mean") -> float | None:
    """The first evaluation row's ``key`` (the return at the first target, or BC's only row)."""
    value = record["report"]["results"][0].get(key)
    return None if value is None else float(value)


def mean_std(values: list[float | None]) -> tuple[float, float, int] | None:
    """Mean, population std and count of the non-missing values (None if there are none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return float(np.mean(vals)), float(np.std(vals)), len(vals)


def fmt(stat: tuple[float, float, int] | None, digits: int = 1) -> str:
    if stat is None:
        return "-"
    mean, std, _ = stat
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def budget_line(cfg: ExperimentConfig, seeds: list[int], results: list[dict[str, Any]]) -> str:
    minutes = sum(r["train_seconds"] for r in results) / 60
    return (
        f"Seeds {seeds}; {cfg.max_steps} optimiser steps per run; {cfg.eval_episodes} evaluation episodes "
        f"per run and target; mean ± std over seeds; {len(results)} run{'s' if len(results) != 1 else ''}, "
        f"{minutes:.1f} min of training."
    )


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg canvas, or None (with a warning) when the plot extra is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn('plots need matplotlib: pip install "lit-seqrl[plot]"', UserWarning, stacklevel=2)
        return None
    return plt


Stat = tuple[float, float, int] | None  # mean, std, count (None: no runs)


def bar_chart(
    path: Path,
    groups: list[str],
    series: dict[str, list[Stat]],
    ylabel: str,
    title: str,
    figsize: tuple[float, float],
    legend_columns: int = 1,
) -> Path | None:
    """Grouped bars, mean ± std: in every group one bar per series; ``series[label][i]`` is group i's.

    Returns ``path`` once written, or None when matplotlib is missing.
    """
    plt = pyplot()
    if plt is None:
        return None
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=figsize)
    for j, (label, stats) in enumerate(series.items()):
        x = np.arange(len(groups)) + (j - (len(series) - 1) / 2) * width
        ax.bar(
            x,
            [np.nan if s is None else s[0] for s in stats],
            width,
            yerr=[0 if s is None else s[1] for s in stats],
            capsize=3,
            label=label,
        )
    ax.set_xticks(np.arange(len(groups)), groups, fontsize=8)
    ax.set_ylabel(ylabel.replace("_", " "))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=legend_columns)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bar_charts_per_dataset(
    cfg: ExperimentConfig,
    out: Path,
    name: str,
    title: str,
    key: str,
    series_for: Callable[[str], dict[str, list[Stat]]],
) -> tuple[list[str], list[Path]]:
    """A :func:`bar_chart` per dataset over the config's variants, ``out/<name>-<dataset>.png``:
    the markdown lines embedding them, and their paths.

    ``series_for(dataset)`` gives the bars, as :func:`bar_chart`'s ``series``.
    """
    variants = list(cfg.variants)
    size = (max(5.0, 1.5 + 1.6 * len(variants)), 4)
    parts, plots = [], []
    for dataset in cfg.datasets:
        path = out / f"{name}-{slug(dataset)}.png"
        if bar_chart(path, variants, series_for(dataset), key, f"{title}: {dataset}", size) is not None:
            plots.append(path)
            parts += [f"![{title.lower()} on {dataset}]({path.name})", ""]
    return parts, plots
