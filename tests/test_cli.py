"""The ``lit-seqrl`` command end to end, in subprocesses (and in-process where noted), on the generated default dataset."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from lit_seqrl.agents import load_agent
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.cli import SeqRLCLI, main, user_error
from lit_seqrl.data import collect
from lit_seqrl.errors import ConfigError
from lit_seqrl.evaluation.rollout import run_episodes
from tests.helpers import REPO, TINY, run_cli

CONFIG = str(REPO / "configs" / "dt_pendulum.yaml")


def test_fit_fast_dev_run_on_the_default_config(tmp_path):
    proc = run_cli(
        "fit",
        "--config",
        CONFIG,
        "--trainer.fast_dev_run=true",
        f"--trainer.default_root_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert "fast_dev_run" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    proc = run_cli(
        "fit", "--config", CONFIG, *TINY,
        "--trainer.max_steps=6", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={root}", cwd=root,
    )  # fmt: skip
    ckpts = sorted(root.rglob("last.ckpt"))
    assert len(ckpts) == 1, proc.stdout
    assert (
        "TensorBoard logs:" in proc.stdout and "evaluate with: lit-seqrl evaluate --ckpt_path" in proc.stdout
    )
    assert list(root.rglob("events.out.tfevents.*")), "no TensorBoard event file written"
    assert list(root.rglob("best-step=*.ckpt")), "no best checkpoint by eval return"
    return ckpts[0]


def test_evaluate_a_checkpoint_alone_prints_table_and_json(trained_checkpoint):
    proc = run_cli(
        "evaluate",
        "--ckpt_path",
        str(trained_checkpoint),
        "--episodes",
        "3",
        "--num_envs",
        "2",
        "--target_return",
        "-150",
        "-600",
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["episodes"] == 3 and report["mode"] == "window"
    assert [r["target_return"] for r in report["results"]] == [-150.0, -600.0]
    # The numbers are those of this checkpoint's policy: episodes rolled out here, in-process,
    # with the same seeds and targets (a command that loaded other weights, mis-scaled the target
    # or mixed up the rows would differ), and the scores follow from the stored references.
    agent = load_agent(str(trained_checkpoint))
    for row, target in zip(report["results"], (-150.0, -600.0)):
        episodes = run_episodes("Pendulum-v1", DecisionPolicy(agent, target), episodes=3, num_envs=2, seed=0)
        assert row["return_mean"] == pytest.approx(np.mean([e.total_return for e in episodes]), rel=1e-5)
        low, high = agent.spec["ref_min_score"], agent.spec["ref_max_score"]
        assert high > low  # generated datasets carry their references
        assert row["normalized_score"] == pytest.approx(100 * (row["return_mean"] - low) / (high - low))
    assert "return_mean" in proc.stdout  # the human table precedes the JSON line


def _cpp_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU ($CXX, else the usual names), or None."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((path for name in names if (path := shutil.which(name))), None)


@pytest.mark.skipif(_cpp_compiler() is None, reason="torch.compile on CPU needs a C++ compiler")
def test_evaluate_with_compiled_acting_gives_the_same_returns(trained_checkpoint):
    """``--compile true``: the real torch.compile (inductor) path, the same episodes as eager."""
    args = ("evaluate", "--ckpt_path", str(trained_checkpoint), "--episodes", "2", "--num_envs", "2")
    eager = json.loads(run_cli(*args).stdout.strip().splitlines()[-1])["results"][0]
    proc = run_cli(*args, "--compile", "true")
    compiled = json.loads(proc.stdout.strip().splitlines()[-1])["results"][0]
    assert "acting eagerly" not in proc.stderr  # compiled for real, no fallback
    assert compiled["length_mean"] == eager["length_mean"]
    assert compiled["return_mean"] == pytest.approx(eager["return_mean"], abs=1e-2)


def test_evaluate_recurrent_mode_and_mismatched_env(trained_checkpoint):
    proc = run_cli(
        "evaluate", "--ckpt_path", str(trained_checkpoint), "--episodes", "2", "--mode", "recurrent"
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1])["mode"] == "recurrent"
    bad = run_cli("evaluate", "--ckpt_path", str(trained_checkpoint), "--env_id", "CartPole-v1", check=False)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == (
        "lit-seqrl evaluate: error: env CartPole-v1 observations have shape (4,), but the agent was trained on shape (3,)"
    )


def test_print_config_and_backbones_listing():
    proc = run_cli("fit", "--config", CONFIG, "--model.backbone.name=lstm", "--print_config")
    assert "name: lstm" in proc.stdout and "class_path: lit_seqrl.agents.DecisionAgent" in proc.stdout
    listing = run_cli("backbones").stdout
    assert "transformer" in listing and "lit-seqrl" in listing
    assert "Mamba2Backbone(attn_layers='middle')" in listing  # a variant shows what it changes


def test_data_commands(tmp_path):
    run_cli("data", "collect", "lit_seqrl/cartpole/expert-v0", "--num_episodes", "3")
    info = run_cli("data", "info", "lit_seqrl/cartpole/expert-v0").stdout
    assert "CartPole-v1" in info and "episodes" in info and "500.00" in info
    assert "lit_seqrl/cartpole/expert-v0" in run_cli("data", "list").stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--data.init_args.dataset=mujoco/hopper/medium-v0", "run `minari download mujoco/hopper/medium-v0`"),
        ("--data.init_args.dataset=lit_seqrl/pendulum/nope-v0", "not found"),
        ("--data.context_len=0", "context_len (K) must be >= 1, got 0"),
        ("--model.backbone.name=nope", "unknown backbone 'nope'; known backbones:"),
        ("--data.gamma=1.5", "gamma must be in (0, 1], got 1.5"),
        ("--data.val_fraction=1.0", "val_fraction must be in [0, 1), got 1.0"),
    ],
)
def test_bad_fit_inputs_give_one_line_errors(override, message, tmp_path):
    proc = run_cli(
        "fit", "--config", CONFIG, override, "--trainer.fast_dev_run=true", cwd=tmp_path, check=False
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lit-seqrl fit: error: ") and message in last, proc.stderr[-2000:]


def test_unknown_backbone_fails_before_any_data_is_generated(tmp_path, monkeypatch):
    """The backbone name is checked first: a typo costs no dataset generation."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-seqrl"])

    def generate(*args, **kwargs):
        raise AssertionError("data generated before the backbone name was checked")

    monkeypatch.setattr(collect, "collect_dataset", generate)
    args = ["fit", "--config", CONFIG, "--data.dataset=lit_seqrl/cartpole/mixed-v0"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--model.backbone.name=nope", "--trainer.fast_dev_run=true"])
    assert str(info.value.code).startswith("lit-seqrl fit: error: unknown backbone 'nope'; known backbones:")
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").rglob("*.hdf5"))


def test_the_agent_is_built_from_the_data_before_fit(monkeypatch, tmp_path):
    """The CLI links the data module's spec into the agent: network and normalisation exist at once."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-seqrl"])
    cli = SeqRLCLI(args=["--config", CONFIG, *TINY], run=False)  # instantiate only, fit never runs
    agent, dm = cli.model, cli.datamodule
    assert sum(p.numel() for p in agent.backbone.parameters()) > 0
    assert agent.embed_state.in_features == 3 and agent.head.out_features == 1  # Pendulum-v1
    np.testing.assert_allclose(agent.obs_mean.numpy(), dm.obs_mean, rtol=1e-6)
    np.testing.assert_allclose(agent.obs_std.numpy(), dm.obs_std, rtol=1e-6)
    assert agent.hparams.data_spec["max_timestep"] == 201  # 200-step episodes, timesteps 0..200


def test_only_bad_input_is_reported_as_one_line_and_bugs_keep_their_traceback():
    from lit_seqrl.agents.base import lr_factor

    with pytest.raises(TypeError) as bug:  # raised inside lit_seqrl, but a bug, not bad input
        lr_factor("3", warmup=10)
    assert user_error(bug.value) is None
    try:
        try:
            raise ConfigError("gamma must be in (0, 1], got 1.5")
        except ConfigError as err:
            raise RuntimeError("Problem with given class_path") from err  # as jsonargparse wraps it
    except RuntimeError as wrapped:
        assert str(user_error(wrapped)) == "gamma must be in (0, 1], got 1.5"
    with pytest.raises(TypeError), pytest.MonkeyPatch.context() as mp:  # main re-raises, no one-liner
        mp.setattr("lit_seqrl.cli.run_backbones", lambda argv: lr_factor("3", warmup=10))
        main(["backbones"])


def test_invalid_choice_is_rejected_by_the_parser(tmp_path):
    proc = run_cli("fit", "--config", CONFIG, "--model.token_layout=diagonal", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "Expected a typing.Literal['interleaved', 'stacked']. Got value: diagonal" in proc.stderr


def test_checkpoint_of_another_agent_class_or_not_ours_is_refused(trained_checkpoint, tmp_path):
    import torch

    from lit_seqrl.agents import SeqRLAgent, load_agent

    class OtherAgent(SeqRLAgent):
        pass

    with pytest.raises(ValueError, match=r"holds a DecisionAgent, not a OtherAgent"):
        load_agent(str(trained_checkpoint), expected=OtherAgent)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="is not a lit-seqrl agent checkpoint"):
        load_agent(str(foreign))
    proc = run_cli("evaluate", "--ckpt_path", str(tmp_path / "missing.ckpt"), check=False)
    assert proc.stderr.strip().splitlines()[-1].startswith("lit-seqrl evaluate: error: checkpoint not found")


def test_ckpt_path_last_continues_the_newest_run_in_its_own_log_folder(tmp_path):
    args = ["fit", "--config", CONFIG, *TINY, "--model.eval_episodes=0", "--trainer.val_check_interval=2"]
    args += ["--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path}"]
    run_cli(*args, "--trainer.max_steps=4", cwd=tmp_path)
    proc = run_cli(*args, "--trainer.max_steps=6", "--ckpt_path", "last", cwd=tmp_path)
    assert "Restored all states from the checkpoint" in proc.stdout + proc.stderr
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]
    ckpt = torch.load(
        tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False
    )
    assert ckpt["global_step"] == 6
