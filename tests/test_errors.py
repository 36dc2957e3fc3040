"""Bad inputs and the exact one-line error each must produce (``lit_seqrl.errors.ConfigError``).

Every row runs the real command line in-process (``lit_seqrl.cli.main``, which turns our errors
into ``sys.exit("lit-seqrl CMD: error: ...")``); argument-parser errors are checked on stderr.
One row runs in a subprocess to pin the installed entry point's exit status and output. A NaN
loss during training is checked separately: it must stop training, naming the step, and leave the
last good checkpoint in place.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from lit_seqrl.agents import DecisionAgent
from lit_seqrl.agents.callbacks import NonFiniteLossError
from lit_seqrl.cli import main
from lit_seqrl.data import OfflineTrajectoryDataModule
from lit_seqrl.data.catalogue import DEFAULT_DATASETS
from lit_seqrl.data.episodes import Episode
from lit_seqrl.data.importers import import_dataset
from lit_seqrl.data.store import write_dataset
from lit_seqrl.registry import list_backbones
from tests.helpers import REPO, flat, quiet_trainer, run_cli, write_hdf5

CONFIG = str(REPO / "configs" / "dt_pendulum.yaml")
TINY_DATA = "test/pendulum/tiny-v0"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private datasets root with a tiny Pendulum dataset, a NaN dataset and some bad files."""
    tmp = tmp_path_factory.mktemp("bad")
    root = tmp / "datasets"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        rng = np.random.default_rng(0)
        arrays = flat(n=240, obs_dim=3)
        arrays["terminals"][:] = False
        arrays["timeouts"][:] = np.arange(240) % 40 == 39  # 6 episodes of 40 steps
        arrays["actions"] = rng.uniform(-2, 2, (240, 1)).astype(np.float32)
        import_dataset(write_hdf5(tmp / "tiny.hdf5", arrays), TINY_DATA, "Pendulum-v1")
        rewards = np.ones(10, np.float32)
        rewards[3] = np.nan  # stored past the importer's checks, as a foreign tool might
        bad_episode = Episode(
            np.zeros((10, 3), np.float32), np.zeros((10, 1), np.float32), rewards, False, True, 0
        )
        write_dataset("test/pendulum/nan-v0", [bad_episode], "Pendulum-v1")

        short = flat(n=1000)
        short["actions"] = short["actions"][:999]
        write_hdf5(tmp / "short.hdf5", short)
        (tmp / "table.csv").write_text("observations,actions\n1,2\n")
        (tmp / "garbage.ckpt").write_text("not a checkpoint")
        torch.save({"state_dict": {}}, tmp / "foreign.ckpt")
        (tmp / "empty_runs").mkdir()
        mp.setattr(sys, "argv", ["lit-seqrl"])  # LightningCLI warns when given both
        yield {"tmp": tmp, "root": root}


def fit_args(*overrides: str, dataset: str = TINY_DATA) -> list[str]:
    return ["fit", "--config", CONFIG, f"--data.dataset={dataset}", *overrides, "--trainer.fast_dev_run=true"]


# (id, command line, exact error line); {tmp} and {root} are filled in from the fixture.
BAD_INPUTS = [
    # ---------------------------------------------------------------- configs
    (
        "context_len 0",
        fit_args("--data.context_len=0"),
        "lit-seqrl fit: error: context_len (K) must be >= 1, got 0",
    ),
    ("gamma above 1", fit_args("--data.gamma=1.5"), "lit-seqrl fit: error: gamma must be in (0, 1], got 1.5"),
    (
        "top_fraction 0",
        fit_args("--data.top_fraction=0"),
        "lit-seqrl fit: error: top_fraction must be in (0, 1], got 0.0",
    ),
    (
        "batch_size 0",
        fit_args("--data.batch_size=0"),
        "lit-seqrl fit: error: batch_size and windows_per_epoch must be >= 1, got 0 and 32000",
    ),
    (
        "val_fraction 1",
        fit_args("--data.val_fraction=1.0"),
        "lit-seqrl fit: error: val_fraction must be in [0, 1), got 1.0",
    ),
    (
        "checkpoint every 0 steps",
        fit_args("--model.checkpoint_every_n_steps=0"),
        "lit-seqrl fit: error: checkpoint_every_n_steps must be >= 1, got 0",
    ),
    (
        "unknown backbone",
        fit_args("--model.backbone.name=nope"),
        "lit-seqrl fit: error: unknown backbone 'nope'; known backbones: {backbones}",
    ),
    # ---------------------------------------------------------------- datasets
    (
        "dataset not downloaded",
        fit_args(dataset="mujoco/hopper/medium-v0"),
        "lit-seqrl fit: error: dataset 'mujoco/hopper/medium-v0' not found under {root}; "
        "run `minari download mujoco/hopper/medium-v0`",
    ),
    (
        "dataset path without data",
        fit_args(dataset="{tmp}/empty_runs"),
        "lit-seqrl fit: error: no minari dataset at '{tmp}/empty_runs' (expected a directory containing data/metadata.json)",
    ),
    (
        "NaN in a stored dataset",
        fit_args(dataset="test/pendulum/nan-v0"),
        "lit-seqrl fit: error: dataset 'test/pendulum/nan-v0': episode 0 has a non-finite value in rewards (first at step 3)",
    ),
    (
        "info on a missing id",
        ["data", "info", "nope/x-v0"],
        "lit-seqrl data: error: dataset 'nope/x-v0' not found under {root}; run `minari download nope/x-v0`",
    ),
    (
        "collect an unknown built-in",
        ["data", "collect", "lit_seqrl/pendulum/nope-v0"],
        "lit-seqrl data: error: 'lit_seqrl/pendulum/nope-v0' is not a built-in dataset; built-in ids: {builtins}",
    ),
    (
        "import a missing file",
        ["data", "import", "{tmp}/absent.hdf5", "--id", "test/x/y-v0"],
        "lit-seqrl data: error: no such file: {tmp}/absent.hdf5",
    ),
    (
        "import with inconsistent lengths",
        ["data", "import", "{tmp}/short.hdf5", "--id", "test/x/y-v0"],
        "lit-seqrl data: error: short.hdf5: actions has 999 rows but observations has 1000",
    ),
    (
        "import a CSV",
        ["data", "import", "{tmp}/table.csv", "--id", "test/x/y-v0"],
        "lit-seqrl data: error: table.csv: neither an HDF5 file nor a readable pickle (UnpicklingError: could not find MARK)",
    ),
    (
        "import under a malformed id",
        ["data", "import", "{tmp}/tiny.hdf5", "--id", "hopper"],
        "lit-seqrl data: error: dataset id 'hopper' must look like [namespace/]name-vN, e.g. d4rl/hopper/expert-v0",
    ),
    (
        "import for an unknown env",
        ["data", "import", "{tmp}/tiny.hdf5", "--id", "test/x/y-v0", "--env", "Nope-v0"],
        "lit-seqrl data: error: unknown environment 'Nope-v0': not registered with gymnasium",
    ),
    (
        "import over an existing id",
        ["data", "import", "{tmp}/tiny.hdf5", "--id", TINY_DATA],
        f"lit-seqrl data: error: dataset '{TINY_DATA}' already exists; pass --overwrite to replace it",
    ),
    # ---------------------------------------------------------------- checkpoints
    (
        "missing checkpoint",
        ["evaluate", "--ckpt_path", "{tmp}/absent.ckpt"],
        "lit-seqrl evaluate: error: checkpoint not found: {tmp}/absent.ckpt",
    ),
    (
        "garbage checkpoint",
        ["evaluate", "--ckpt_path", "{tmp}/garbage.ckpt"],
        "lit-seqrl evaluate: error: cannot read checkpoint {tmp}/garbage.ckpt: invalid load key, 'n'.",
    ),
    (
        "checkpoint of something else",
        ["evaluate", "--ckpt_path", "{tmp}/foreign.ckpt"],
        "lit-seqrl evaluate: error: {tmp}/foreign.ckpt is not a lit-seqrl agent checkpoint (no 'lit_seqrl_agent' entry)",
    ),
    # ---------------------------------------------------------------- plot
    (
        "plot a missing directory",
        ["plot", "{tmp}/absent"],
        "lit-seqrl plot: error: no such directory: {tmp}/absent",
    ),
    (
        "plot a directory without logs",
        ["plot", "{tmp}/empty_runs"],
        "lit-seqrl plot: error: no TensorBoard event files under {tmp}/empty_runs",
    ),
    (
        "plot with smoothing 1.5",
        ["plot", "{tmp}", "--smooth", "1.5"],
        "lit-seqrl plot: error: smooth must be in [0, 1), got 1.5",
    ),
]

# Rejected by the argument parser itself: exit status 2 and this last line on stderr.
PARSER_ERRORS = [
    ("evaluate without a checkpoint", ["evaluate"], "error: the following arguments are required: ckpt_path"),
    (
        "import without an id",
        ["data", "import", "x.hdf5"],
        "error: the following arguments are required: import.id",
    ),
    (
        "data without a subcommand",
        ["data"],
        'error: expected "subcommand" to be one of {collect,import,info,list}, but it was not provided.',
    ),
    ("plot without runs", ["plot"], "error: the following arguments are required: run_dirs"),
    (
        "plot with an unknown grouping",
        ["plot", ".", "--group", "seeds"],
        "Expected a typing.Literal['parent', 'root', 'prefix', 'none']. Got value: seeds",
    ),
]


def _fill(text: str, env: dict) -> str:
    return text.format(
        tmp=env["tmp"],
        root=env["root"],
        backbones=", ".join(list_backbones()),
        builtins=sorted(DEFAULT_DATASETS),
    )


@pytest.mark.parametrize(
    ("argv", "message"), [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS]
)
def test_bad_input_gives_its_exact_one_line_error(env, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a failed fit writes stays out of the repository
    with pytest.raises(SystemExit) as info:
        main([_fill(a, env) for a in argv])
    assert info.value.code == _fill(message, env)


@pytest.mark.parametrize(
    ("argv", "message"), [row[1:] for row in PARSER_ERRORS], ids=[row[0] for row in PARSER_ERRORS]
)
def test_bad_arguments_are_rejected_by_the_parser(env, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1].strip()
    assert last == message


def test_table_is_large_enough():
    assert len(BAD_INPUTS) + len(PARSER_ERRORS) >= 15


def test_the_installed_command_exits_1_with_the_line_on_stderr(env):
    proc = run_cli("data", "import", str(env["tmp"] / "short.hdf5"), "--id", "test/x/y-v0", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "lit-seqrl data: error: short.hdf5: actions has 999 rows but observations has 1000"
    )


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(env, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(env["root"]))
    dm = OfflineTrajectoryDataModule(
        TINY_DATA, context_len=5, batch_size=8, windows_per_epoch=256, val_windows=8
    )
    agent = DecisionAgent(
        backbone={"name": "transformer", "d_model": 16, "n_layers": 1, "n_heads": 1},
        eval_episodes=0,
        warmup_steps=1,
        checkpoint_every_n_steps=2,
        data_spec=dm.data_spec(),
    )
    original = DecisionAgent._loss

    def poisoned(self, batch):  # as a diverging run would: the loss becomes NaN at step 5
        loss, err = original(self, batch)
        return (loss * float("nan") if self.training and self.global_step == 5 else loss), err

    monkeypatch.setattr(DecisionAgent, "_loss", poisoned)
    trainer = quiet_trainer(
        max_steps=20, default_root_dir=tmp_path, limit_val_batches=0, num_sanity_val_steps=0
    )
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(agent, dm)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert str(info.value) == (
        f"training loss is nan at step 5 (epoch 0); training stopped before that update and the last "
        f"checkpoint, {last}, is from before it. Lower the learning rate or check the data (lit-seqrl data info)"
    )
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in agent.parameters())  # the bad step was never applied
