"""The ``lit-seqrl`` command.

``fit | validate | test | predict`` are LightningCLI's (``--config X.yaml`` plus dotted overrides);
``evaluate``, ``data`` and ``backbones`` need no model config, so they are jsonargparse commands
of their own that share the same parsing library and style.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningCLI

EXTRA_COMMANDS = ("evaluate", "data", "backbones")


class SeqRLCLI(LightningCLI):
    """LightningCLI in subclass mode: configs name the agent and data module by class path."""

    def __init__(self, **kwargs: Any) -> None:
        from lit_seqrl.agents.base import SeqRLAgent

        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            SeqRLAgent, None, subclass_mode_model=True, auto_configure_optimizers=False, **kwargs
        )

    def after_fit(self) -> None:
        trainer = self.trainer
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if not trainer.is_global_zero:
            return
        print(f"\nTensorBoard logs: {log_dir}   (tensorboard --logdir {log_dir})")
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and (ckpt.last_model_path or ckpt.best_model_path):
            print(f"checkpoints: last={ckpt.last_model_path or '-'} best={ckpt.best_model_path or '-'}")
            print(
                f"evaluate with: lit-seqrl evaluate --ckpt_path {ckpt.best_model_path or ckpt.last_model_path}"
            )


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
        "--env_id", type=str | None, default=None, help="override the environment id stored in the checkpoint"
    )
    p.add_argument("--device", type=str, default="cpu")
    return p


def run_evaluate(argv: list[str]) -> dict[str, Any]:
    from lit_seqrl.agents.base import load_agent
    from lit_seqrl.evaluation.report import print_report

    args = _evaluate_parser().parse_args(argv)
    agent = load_agent(args.ckpt_path, map_location=args.device)
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
    from lit_seqrl.data.collect import DEFAULT_DATASETS

    p = ArgumentParser(prog="lit-seqrl data", description="Offline datasets (stored as minari datasets).")
    sub = p.add_subcommands(required=True)
    collect = ArgumentParser(description="Generate a built-in dataset locally with scripted controllers.")
    collect.add_argument("dataset_id", type=str, help=f"one of: {', '.join(DEFAULT_DATASETS)}")
    collect.add_argument("--overwrite", type=bool, default=False)
    collect.add_argument("--num_episodes", type=int | None, default=None, help="override the mixture size")
    sub.add_subcommand("collect", collect, help="generate a built-in dataset")
    info = ArgumentParser(description="Episodes, steps, return statistics and spaces of a dataset.")
    info.add_argument("dataset_id", type=str)
    sub.add_subcommand("info", info, help="describe a dataset")
    sub.add_subcommand(
        "list", ArgumentParser(description="Local minari datasets."), help="list local datasets"
    )
    return p


def run_data(argv: list[str]) -> None:
    from lit_seqrl.data import commands

    cfg = _data_parser().parse_args(argv)
    name = cfg.subcommand
    getattr(commands, name)(**dict(cfg[name]))


def run_backbones(argv: list[str]) -> None:
    ArgumentParser(
        prog="lit-seqrl backbones", description="List registered backbones and their packages."
    ).parse_args(argv)
    from lit_seqrl.registry import list_backbones

    entries = list_backbones()
    width = max((len(n) for n in entries), default=4)
    print(f"{'name':<{width}}  provider    class")
    for name, entry in entries.items():
        print(f"{name:<{width}}  {entry.provider:<10}  {entry.cls.__module__}.{entry.cls.__qualname__}")


_USER_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)


def user_error(err: BaseException) -> BaseException | None:
    """The bad-input error raised by lit_seqrl itself somewhere in ``err``'s chain, if any.

    jsonargparse wraps errors raised while instantiating classes from a config; the user should
    see our one-line message, not the wrapper's.
    """
    seen: set[int] = set()
    found = None
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        tb = err.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if (
            isinstance(err, _USER_ERRORS)
            and tb is not None
            and f"{os.sep}lit_seqrl{os.sep}" in tb.tb_frame.f_code.co_filename
        ):
            found = err
        err = err.__cause__ or err.__context__
    return found


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    import lit_seqrl.envs  # noqa: F401  (registers our gymnasium environments)

    command = args[0] if args else "lit-seqrl"
    try:
        if command in EXTRA_COMMANDS:
            {"evaluate": run_evaluate, "data": run_data, "backbones": run_backbones}[command](args[1:])
        else:
            SeqRLCLI(args=argv)  # None: LightningCLI reads sys.argv itself
    except Exception as err:
        cause = user_error(err)
        if cause is None or os.environ.get("LIT_SEQRL_DEBUG"):
            raise
        sys.exit(f"lit-seqrl {command}: error: {cause}")
