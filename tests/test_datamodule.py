"""OfflineTrajectoryDataModule wired to its consumers: options reach the windows, each epoch of a
real fit draws new windows, and what a checkpoint needs (normalisation, data spec) survives it.

Observations carry (episode id, step) in their first two features, so every window row can be
traced back to its source step and checked against values computed here from the raw episodes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lit_seqrl.agents import DecisionAgent, load_agent
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.data import OfflineTrajectoryDataModule
from lit_seqrl.data.episodes import Episode
from lit_seqrl.data.store import write_dataset
from tests.helpers import quiet_trainer

DATASET = "test/traced-v0"
LENGTHS = [23, 31, 17, 40, 28, 35, 19, 26, 33, 21]
TINY = {"name": "transformer", "d_model": 16, "n_layers": 1, "n_heads": 1, "dropout": 0.0}


def _episodes() -> list[Episode]:
    rng = np.random.default_rng(0)
    episodes = []
    for i, T in enumerate(LENGTHS):
        steps = np.arange(T, dtype=np.float32)
        # Third feature: mean 3, std 2, so normalisation by the data's statistics matters.
        obs = np.stack(
            [np.full(T, i, np.float32), steps, 3 + 2 * rng.standard_normal(T).astype(np.float32)], 1
        )
        episodes.append(
            Episode(
                observations=obs,
                actions=rng.uniform(-2, 2, (T, 1)).astype(np.float32),
                rewards=rng.uniform(-10, 0, T).astype(np.float32),
                terminated=False,
                truncated=True,
                id=i,
                final_observation=np.zeros(3, np.float32),
            )
        )
    return episodes


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """The minari directory the dataset is written to (once), and its episodes."""
    root = tmp_path_factory.mktemp("datasets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        episodes = _episodes()
        write_dataset(DATASET, episodes, "Pendulum-v1")
    return root, episodes


@pytest.fixture
def datasets_env(traced, monkeypatch):
    root, episodes = traced
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return episodes


def rtg_by_definition(rewards, gamma: float, delayed: bool) -> np.ndarray:
    """R_t = Σ_{k>=t} γ^(k-t) r_k over the (possibly delayed) rewards, in Python floats."""
    r = [float(x) for x in rewards]
    if delayed:
        r = [0.0] * (len(r) - 1) + [sum(r)]
    return np.array([sum(gamma ** (k - t) * r[k] for k in range(t, len(r))) for t in range(len(r))])


@pytest.mark.parametrize(
    ("gamma", "delayed", "scale"), [(0.9, False, 0.1), (1.0, True, 0.01), (0.8, True, 1.0)]
)
def test_options_reach_the_training_windows(datasets_env, gamma, delayed, scale):
    episodes = datasets_env
    dm = OfflineTrajectoryDataModule(
        DATASET, context_len=6, batch_size=32, windows_per_epoch=64, val_fraction=0.0,
        gamma=gamma, delayed_reward=delayed, reward_scale=scale,
    )  # fmt: skip
    dm.setup("fit")
    spec = dm.data_spec()
    assert (spec["gamma"], spec["delayed_reward"], spec["reward_scale"]) == (gamma, delayed, scale)
    checked = 0
    for batch in dm.train_dataloader():
        for b in range(batch["mask"].shape[0]):
            for k in np.flatnonzero(batch["mask"][b].numpy()):
                ep_id, t = (int(v) for v in batch["observations"][b, k, :2])
                ep = episodes[ep_id]
                rtg = rtg_by_definition(ep.rewards, gamma, delayed)[t] * scale
                reward = float(ep.rewards[t])
                if delayed:
                    reward = float(np.sum(ep.rewards, dtype=np.float64)) if t == ep.length - 1 else 0.0
                assert batch["returns_to_go"][b, k, 0].item() == pytest.approx(rtg, rel=1e-5, abs=1e-5)
                assert batch["rewards"][b, k, 0].item() == pytest.approx(reward * scale, rel=1e-5, abs=1e-6)
                assert batch["timesteps"][b, k].item() == t
                assert batch["actions"][b, k, 0].item() == pytest.approx(float(ep.actions[t, 0]))
                checked += 1
    assert checked > 64 * 3  # most windows are full


class _FirstSteps(Callback):
    """Per epoch, the (episode, step) of every training window's first real row."""

    def __init__(self) -> None:
        self.by_epoch: dict[int, list[tuple[int, int]]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        seen = self.by_epoch.setdefault(trainer.current_epoch, [])
        for b in range(batch["mask"].shape[0]):
            first = int(np.argmax(batch["mask"][b].numpy()))
            seen.append(tuple(int(v) for v in batch["observations"][b, first, :2]))


@pytest.fixture(scope="module")
def fitted(traced, tmp_path_factory):
    """Two epochs of a real fit on the traced data: (agent, data module, recorder, checkpoint)."""
    root = tmp_path_factory.mktemp("fit")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(traced[0]))
        torch.manual_seed(0)
        dm = OfflineTrajectoryDataModule(
            DATASET, context_len=5, batch_size=16, windows_per_epoch=64, val_fraction=0.2,
            val_windows=16, gamma=0.95, reward_scale=0.01, seed=1,
        )  # fmt: skip
        agent = DecisionAgent(
            backbone=TINY, warmup_steps=1, eval_episodes=0, target_returns=[-300.0], data_spec=dm.data_spec()
        )
        recorder = _FirstSteps()
        trainer = quiet_trainer(
            max_epochs=2, default_root_dir=root, callbacks=[recorder], limit_val_batches=1
        )
        trainer.fit(agent, datamodule=dm)
        (ckpt,) = root.rglob("last.ckpt")
        yield agent, dm, recorder, str(ckpt)


class _NeverImproves(DecisionAgent):
    """Logs a validation loss that rises with the step, so only the first validation is the best."""

    def validation_step(self, batch, batch_idx) -> None:
        self.log("val/loss", float(self.global_step))


def test_last_checkpoint_holds_the_final_weights_not_the_best(traced, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(traced[0]))
    dm = OfflineTrajectoryDataModule(
        DATASET, context_len=5, batch_size=16, windows_per_epoch=128, val_fraction=0.2, val_windows=16
    )
    agent = _NeverImproves(backbone=TINY, eval_episodes=0, target_returns=[-300.0], data_spec=dm.data_spec())
    trainer = quiet_trainer(max_steps=8, val_check_interval=4, limit_val_batches=1, default_root_dir=tmp_path)
    trainer.fit(agent, datamodule=dm)
    (best,) = tmp_path.rglob("best-*.ckpt")
    assert torch.load(best, weights_only=False)["global_step"] == 4
    (last,) = tmp_path.rglob("last.ckpt")
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 8
    for name, value in agent.state_dict().items():
        torch.testing.assert_close(state["state_dict"][name], value, msg=name)


def test_each_epoch_of_a_fit_draws_new_windows(fitted):
    _, _, recorder, _ = fitted
    first, second = (recorder.by_epoch[e] for e in (0, 1))
    assert len(first) == len(second) == 64
    # Two independent draws of 64 start steps out of ~270 share about 15; the same draw shares 64.
    assert len(set(first) & set(second)) < 32, "the second epoch repeated the first epoch's windows"


def test_normalisation_and_data_spec_survive_the_checkpoint(fitted, tmp_path, monkeypatch):
    agent, dm, _, ckpt = fitted
    obs = np.concatenate([ep.observations for ep in dm.train_episodes]).astype(np.float64)
    mean, std = obs.mean(0), obs.std(0)
    assert abs(mean[2] - 3) < 0.5 and abs(std[2] - 2) < 0.5  # the statistics are far from (0, 1)

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))  # no dataset from here on
    loaded = load_agent(ckpt)
    for a in (agent, loaded):
        np.testing.assert_allclose(a.obs_mean.numpy(), mean, rtol=1e-5)
        np.testing.assert_allclose(a.obs_std.numpy(), std, rtol=1e-5)
    for key in ("obs_dim", "act_dim", "context_len", "gamma", "reward_scale", "delayed_reward", "env_id"):
        assert loaded.spec[key] == dm.data_spec()[key], key
    assert (loaded.spec["gamma"], loaded.spec["reward_scale"]) == (0.95, 0.01)

    rng = np.random.default_rng(0)
    policies = [DecisionPolicy(a.eval(), -300.0) for a in (agent, loaded)]
    for p in policies:
        p.reset(np.ones(3, dtype=bool))
    for _ in range(7):  # past the context length, so the window slides
        o = rng.normal(size=(3, 3)).astype(np.float32)
        actions = [p.act(o) for p in policies]
        np.testing.assert_allclose(actions[0], actions[1], rtol=1e-6, atol=1e-6)
        for p in policies:
            p.observe(rng.uniform(-10, 0, 3))


def test_evaluate_from_the_checkpoint_alone_gives_the_same_episodes(fitted, tmp_path, monkeypatch, capsys):
    from lit_seqrl.cli import run_evaluate

    agent, _, _, ckpt = fitted
    expected = agent.evaluate_policy(episodes=2, num_envs=2, seed=7, target_returns=[-300.0])
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    args = [
        "--ckpt_path",
        ckpt,
        "--episodes",
        "2",
        "--num_envs",
        "2",
        "--seed",
        "7",
        "--target_return",
        "-300",
    ]
    report = run_evaluate(args)
    capsys.readouterr()
    row, ref = report["results"][0], expected["results"][0]
    assert row["return_mean"] == pytest.approx(ref["return_mean"], rel=1e-6)
    assert row["length_mean"] == ref["length_mean"] == 200


def test_the_data_package_loads_nothing_from_the_layers_above_it():
    """data/ sits below agents/, evaluation/ and the CLI: importing every data module (in a fresh
    interpreter, after the package root and its backbone registry) loads none of them."""
    import pkgutil
    import subprocess
    import sys

    import lit_seqrl.data

    modules = [f"lit_seqrl.data.{m.name}" for m in pkgutil.iter_modules(lit_seqrl.data.__path__)]
    code = (
        "import importlib, sys\n"
        "import lit_seqrl\n"
        "before = set(sys.modules)\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(' '.join(sorted(m for m in set(sys.modules) - before if m.startswith('lit_seqrl.'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "lit_seqrl.data.datamodule" in loaded and "lit_seqrl.data.collect" in loaded
    above = [m for m in loaded if m.split(".")[1] in ("agents", "evaluation", "backbones", "cli", "cli_data")]
    assert not above, f"data modules import higher layers: {above}"
