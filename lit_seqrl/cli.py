"""The ``lit-seqrl`` command.

``fit | validate | test | predict`` are LightningCLI's (``--config X.yaml`` plus dotted overrides);
``evaluate``, ``data``, ``backbones``, ``plot`` and ``experiment`` need no model config, so they are jsonargparse commands
of their own that share the same parsing library and style.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

import lit_seqrl.envs  # noqa: F401  (registers our gymnasium environments)
from lit_seqrl import cli_data as commands
from lit_seqrl.agents.base import SeqRLAgent, load_agent
from lit_seqrl.data.catalogue import DEFAULT_DATASETS
from lit_seqrl.errors import ConfigError
from lit_seqrl.evaluation.plots import DEFAULT_TAGS, GroupRule, PlotDependencyError, plot_runs
from lit_seqrl.evaluation.report import print_report
from lit_seqrl.experiments import run_experiment as run_named_experiment
from lit_seqrl.registry import get_backbone_class, list_backbones

EXTRA_COMMANDS = ("evaluate", "data", "backbones", "plot", "experiment")


class SeqRLCLI(LightningCLI):
    """LightningCLI in subclass mode: configs name the agent and data module by class path."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            SeqRLAgent, None, subclass_mode_model=True, auto_configure_optimizers=False, **kwargs
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The agent is built in its __init__ from the data's spec (dims, bounds, normalisation),
        # so the data module is instantiated first and its spec handed over, as in Lightning's
        # examples. The link is skipped when the config has no data module (online agents).
        parser.link_arguments(
            "data.data_spec", "model.init_args.data_spec", compute_fn=_call, apply_on="instantiate"
        )

    def before_instantiate_classes(self) -> None:
        """Reject an unknown backbone name before the data module generates or loads any data."""
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        spec = config.get("model.init_args.backbone")
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            get_backbone_class(spec["name"])  # raises UnknownBackboneError

    def before_fit(self) -> None:
        """``--ckpt_path last`` continues the newest run that has a ``last.ckpt``, in its own log folder.

        Lightning looks for ``last`` in the folder of the *new* logger version only, so with the
        default auto-incremented TensorBoard version a resumed job would silently start from
        scratch; a logger for the newest version with a last checkpoint replaces it.
        """
        config = self.config[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        logger = self.trainer.logger  # the first logger, which names the checkpoint folder
        init_args = _tensorboard_init_args(config.get("trainer.logger"))
        if not isinstance(logger, TensorBoardLogger) or init_args.get("version") is not None:
            return  # an explicit version: Lightning resolves "last" inside it
        root = Path(logger.root_dir)
        runs = sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if runs:
            version = runs[-1].parents[1].name
            resumed = TensorBoardLogger(
                **{**init_args, "save_dir": logger.save_dir, "name": logger.name, "version": version}
            )
            self.trainer.loggers = [resumed, *self.trainer.loggers[1:]]

    def after_fit(self) -> None:
        trainer = self.trainer
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if trainer.is_global_zero:
            print(f"\nTensorBoard logs: {log_dir}   (tensorboard --logdir {log_dir})")
            ckpt = trainer.checkpoint_callback
            if ckpt is not None and (ckpt.last_model_path or ckpt.best_model_path):
                print(f"checkpoints: last={ckpt.last_model_path or '-'} best={ckpt.best_model_path or '-'}")
                print(
                    f"evaluate with: lit-seqrl evaluate --ckpt_path {ckpt.best_model_path or ckpt.last_model_path}"
                )
        end_process_group(trainer)


def _tensorboard_init_args(logger_config: Any) -> dict[str, Any]:
    """The configured arguments of the first logger when it is a TensorBoardLogger (else none)."""
    first = logger_config[0] if isinstance(logger_config, list) and logger_config else logger_config
    if not isinstance(first, Namespace) or not str(first.get("class_path", "")).endswith("TensorBoardLogger"):
        return {}
    return dict(first.get("init_args") or {})


def _call(method: Any) -> Any:
    """Link helper: the value of a data-module method (``data.data_spec`` -> ``dm.data_spec()``)."""
    return method()


def end_process_group(trainer: Any) -> None:
    """Wait for every rank, then destroy the process group, on every rank.

    Lightning destroys the group at exit only for NCCL. With gloo nothing does: a rank that
    leaves early tore the group down in interpreter shutdown while the other still used it, and
    the other aborted ("terminate called without an active exception").
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        trainer.strategy.barrier("end_of_fit")
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- extra commands
def _evaluate_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="lit-seqrl evaluate", description="Roll out a trained agent from its checkpoint alone."
    )
    p.add_argument("--ckpt_path", type=str, required=True, help="checkpoint written by lit-seqrl fit")
    p.add_argument("--episodes", type=int, default=10, help="episodes per target return")
    p.add_argument(
        "--target_return",
        type=float,
        nargs="+",
        default=None,
        help="target returns (default: the checkpoint's)",
    )
    p.add_argument("--num_envs", type=int, default=10, help="environments stepped together")
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--mode", type=str | None, default=None, help="window | recurrent (default: the agent's)")
    p.add_argument(
        "--compile",
        type=bool | None,
        default=None,
        help="act through torch.compile in window mode (default: the agent's eval_compile)",
    )
    p.add_argument(
        "--env_id", type=str | None, default=None, help="override the environment id stored in the checkpoint"
    )
    p.add_argument("--device", type=str, default="cpu")
    return p


def run_evaluate(argv: list[str]) -> dict[str, Any]:
    args = _evaluate_parser().parse_args(argv)
    agent = load_agent(args.ckpt_path, map_location=args.device)
    if args.compile is not None:
        if "eval_compile" not in agent.hparams:
            raise ConfigError(
                f"--compile: {type(agent).__name__} has no compiled acting (DecisionAgent, BCAgent)"
            )
        agent.hparams.eval_compile = args.compile
    kwargs: dict[str, Any] = {"progress": sys.stderr.isatty()}
    if args.target_return:
        kwargs["target_returns"] = list(args.target_return)
    if args.mode:
        kwargs["mode"] = args.mode
    if args.env_id:
        kwargs["env_id"] = args.env_id
    report = agent.evaluate_policy(episodes=args.episodes, num_envs=args.num_envs, seed=args.seed, **kwargs)
    print_report(report)
    print(json.dumps(report))  # last line: machine-readable
    return report


def _data_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lit-seqrl data", description="Offline datasets (stored as minari datasets).")
    sub = p.add_subcommands(required=True)
    collect = ArgumentParser(
        description="Generate a built-in dataset locally with scripted controllers, or roll out any "
        "policy (--policy, --env, --id) into a minari dataset."
    )
    collect.add_argument(
        "dataset_id", type=str | None, nargs="?", default=None, help=f"one of: {', '.join(DEFAULT_DATASETS)}"
    )
    collect.add_argument("--overwrite", type=bool, default=False)
    collect.add_argument("--num_episodes", type=int | None, default=None, help="override the mixture size")
    collect.add_argument(
        "--policy",
        type=str | None,
        default=None,
        help="ckpt:PATH (a lit-seqrl checkpoint), module:function or file.py:function (observation -> action)",
    )
    collect.add_argument(
        "--env", type=str | None, default=None, help="gymnasium env id (default: the checkpoint's)"
    )
    collect.add_argument("--id", type=str | None, default=None, help="dataset id to store the rollouts as")
    collect.add_argument("--episodes", type=int, default=100, help="episodes to roll out (--policy)")
    collect.add_argument("--seed", type=int, default=0, help="episode i resets with seed + i (--policy)")
    collect.add_argument(
        "--action_noise", type=float, default=0.0, help="Gaussian noise std, x half the action range (Box)"
    )
    collect.add_argument(
        "--epsilon", type=float, default=0.0, help="probability of a uniformly random action"
    )
    collect.add_argument(
        "--target_return", type=float | None, default=None, help="return to condition a ckpt: policy on"
    )
    collect.add_argument("--mode", type=str | None, default=None, help="window | recurrent (ckpt: policies)")
    sub.add_subcommand("collect", collect, help="generate a built-in dataset or roll out a policy")
    imp = ArgumentParser(
        description="Store a D4RL-style HDF5 file (flat arrays) or a pickled list of trajectory dicts "
        "as a minari dataset. Pickles can run code when loaded: import only files you trust."
    )
    imp.add_argument("file", type=str, help="the .hdf5 or .pkl file")
    imp.add_argument(
        "--id", type=str, required=True, help="dataset id to store it as, e.g. d4rl/hopper/expert-v0"
    )
    imp.add_argument("--env", type=str | None, default=None, help="gymnasium env id the data comes from")
    imp.add_argument("--overwrite", type=bool, default=False)
    sub.add_subcommand("import", imp, help="import a D4RL-style hdf5/pickle file")
    info = ArgumentParser(description="Episodes, steps, return statistics and spaces of a dataset.")
    info.add_argument("dataset_id", type=str)
    sub.add_subcommand("info", info, help="describe a dataset")
    sub.add_subcommand(
        "list", ArgumentParser(description="Local minari datasets."), help="list local datasets"
    )
    return p


def run_data(argv: list[str]) -> None:
    cfg = _data_parser().parse_args(argv)
    name = cfg.subcommand
    # `import` is a Python keyword, so its function carries a trailing underscore.
    getattr(commands, "import_" if name == "import" else name)(**dict(cfg[name]))


def run_backbones(argv: list[str]) -> None:
    ArgumentParser(
        prog="lit-seqrl backbones", description="List registered backbones and their packages."
    ).parse_args(argv)
    entries = list_backbones()
    width = max((len(n) for n in entries), default=4)
    pwidth = max((len(e.provider) for e in entries.values()), default=8)  # plugin names can be long
    print(f"{'name':<{width}}  {'provider':<{pwidth}}  class")
    for name, entry in entries.items():
        variant = ", ".join(f"{k}={v!r}" for k, v in entry.defaults.items())  # a variant's defaults
        target = f"{entry.cls.__module__}.{entry.cls.__qualname__}"
        print(f"{name:<{width}}  {entry.provider:<{pwidth}}  {target}" + (f"({variant})" if variant else ""))


def _plot_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="lit-seqrl plot",
        description="Learning curves (PNG) from TensorBoard logs; runs grouped as seeds are drawn as "
        'mean ± std. Needs matplotlib: pip install "lit-seqrl[plot]".',
    )
    p.add_argument("run_dirs", type=str, nargs="+", help="run directories, or directories above them")
    p.add_argument("--out", type=str, default="plots", help="directory for the PNG files")
    p.add_argument(
        "--group",
        type=GroupRule,
        default="parent",
        help="which runs are seeds of one config: parent (runs/dt/seed0, runs/dt/seed1), root (versions "
        "under one --trainer.default_root_dir), prefix (dt_seed0, dt_seed1), none",
    )
    p.add_argument("--tags", type=str, nargs="+", default=list(DEFAULT_TAGS), help="scalar tags to plot")
    p.add_argument("--smooth", type=float, default=0.0, help="exponential smoothing in [0, 1), 0 = none")
    return p


def run_plot(argv: list[str]) -> list[str]:
    args = _plot_parser().parse_args(argv)
    try:
        written = plot_runs(args.run_dirs, args.out, group=args.group, tags=args.tags, smooth=args.smooth)
    except PlotDependencyError as err:  # an ImportError, which user_error does not treat as bad input
        sys.exit(f"lit-seqrl plot: error: {err}")
    for path in written:
        print(path)
    return [str(p) for p in written]


def _experiment_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="lit-seqrl experiment",
        description="Run a paper experiment (conditioning | context | delayed | backbones): trains every "
        "variant per seed, then writes results.md (mean ± std over seeds) and PNG plots under --out. "
        "Finished seeds are skipped on a rerun.",
    )
    p.add_argument("name", type=str, help="conditioning | context | delayed | backbones")
    p.add_argument("--config", type=str, required=True, help="configs/experiments/<name>.yaml")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per variant")
    p.add_argument(
        "--max_steps", type=int | None, default=None, help="optimiser steps per run (default: config)"
    )
    p.add_argument(
        "--out", type=str | None, default=None, help="run directory (default runs/experiments/NAME)"
    )
    p.add_argument(
        "--dataset", type=str | None, nargs="+", default=None, help="dataset ids replacing the config's"
    )
    p.add_argument(
        "--eval_episodes", type=int | None, default=None, help="episodes per evaluation (default: config)"
    )
    p.add_argument("--variant", type=str | None, nargs="+", default=None, help="run only these variants")
    return p


def run_experiment(argv: list[str]) -> dict[str, Any]:
    args = _experiment_parser().parse_args(argv)
    result = run_named_experiment(
        args.name,
        args.config,
        seeds=args.seeds,
        max_steps=args.max_steps,
        out=args.out,
        datasets=args.dataset,
        eval_episodes=args.eval_episodes,
        variants=args.variant,
        progress=sys.stderr.isatty(),
    )
    print(result["markdown"])
    print(f"\nwritten: {Path(result['out']) / 'results.md'}" + "".join(f", {p}" for p in result["plots"]))
    return result


def user_error(err: BaseException | None) -> ConfigError | None:
    """The :class:`~lit_seqrl.errors.ConfigError` (bad input) in ``err``'s chain, if any.

    jsonargparse wraps errors raised while instantiating classes from a config; the user should
    see our one-line message, not the wrapper's. Any other error is a bug and keeps its traceback.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "lit-seqrl"
    try:
        if command in EXTRA_COMMANDS:
            commands = {
                "evaluate": run_evaluate,
                "data": run_data,
                "backbones": run_backbones,
                "plot": run_plot,
                "experiment": run_experiment,
            }
            commands[command](args[1:])
        else:
            SeqRLCLI(args=argv)  # None: LightningCLI reads sys.argv itself
    except Exception as err:
        cause = user_error(err)
        if cause is None or os.environ.get("LIT_SEQRL_DEBUG"):
            raise
        sys.exit(f"lit-seqrl {command}: error: {cause}")
