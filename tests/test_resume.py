"""Determinism and exact resume: a fit SIGKILLed mid-epoch and resumed with ``--ckpt_path last``
ends with the same weights and the same per-step losses as an uninterrupted fit.

What makes it exact: the training DataLoader's position (and the window dataset's epoch) is saved
in the checkpoint (torchdata's ``StatefulDataLoader``), and so are the python/numpy/torch RNG states that
dropout draws from (``RNGStateCheckpoint``); loaders draw their seeds from their own generator.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torchdata.stateful_dataloader import StatefulDataLoader

from lit_seqrl.agents.callbacks import RNGStateCheckpoint
from lit_seqrl.data.episodes import Episode
from lit_seqrl.data.windows import TrajectoryWindows, collate_windows
from lit_seqrl.evaluation.plots import read_scalars
from tests.helpers import REPO, TINY, run_cli

KILL_AT = 11  # epoch 1, batch 3 of 8: after the step-9 checkpoint, before the step-12 one


class KillAtStep(Callback):
    """SIGKILLs its own process right before training step ``step`` (no cleanup, like an OOM kill)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def fit(root, *extra, check=True):
    """21 steps of 8-batch epochs, dropout on, last.ckpt every 3 steps, a fixed log directory."""
    return run_cli(
        "fit", "--config", str(REPO / "configs" / "dt_pendulum.yaml"), *TINY,
        "--data.windows_per_epoch=128", "--model.eval_episodes=0", "--model.checkpoint_every_n_steps=3",
        "--trainer.max_steps=21", "--trainer.val_check_interval=8", "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        # A fixed version: the resumed run finds last.ckpt there and keeps logging into the same directory.
        "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
        f"--trainer.logger.init_args.save_dir={root}", "--trainer.logger.init_args.version=run",
        *extra, cwd=root, check=check,
    )  # fmt: skip


def final_state(root) -> dict:
    return torch.load(root / "lightning_logs" / "run" / "checkpoints" / "last.ckpt", weights_only=False)


def losses(path) -> dict[int, float]:
    steps, values = read_scalars(path).scalars["train/loss"]
    return dict(zip(steps.tolist(), values.tolist()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    uninterrupted = tmp_path_factory.mktemp("uninterrupted")
    fit(uninterrupted)
    killed = tmp_path_factory.mktemp("killed")
    proc = fit(
        killed,
        "--trainer.callbacks+=tests.test_resume.KillAtStep",
        f"--trainer.callbacks.step={KILL_AT}",
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert final_state(killed)["global_step"] == 9  # the newest checkpoint, mid-epoch
    fit(killed, "--ckpt_path", "last")
    return uninterrupted, killed


def test_identical_runs_log_identical_losses(runs):
    uninterrupted, killed = runs
    # The killed run's first event file holds its steps before the kill: a second identical run.
    first_events = sorted((killed / "lightning_logs" / "run").glob("events.out.tfevents.*"))[0]
    before_kill = losses(first_events)
    assert sorted(before_kill) == list(range(KILL_AT))
    reference = losses(uninterrupted / "lightning_logs" / "run")
    assert before_kill == {s: reference[s] for s in before_kill}


def test_resumed_run_matches_the_uninterrupted_one_exactly(runs):
    uninterrupted, killed = runs
    a, b = final_state(uninterrupted), final_state(killed)
    assert a["global_step"] == b["global_step"] == 21 and a["epoch"] == b["epoch"] == 2
    assert a["state_dict"].keys() == b["state_dict"].keys()
    unequal = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not unequal, f"weights differ after resuming: {unequal}"
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # The resumed run's steps 9..20 replace the killed run's 9..10 in its log.
    assert losses(killed / "lightning_logs" / "run") == losses(uninterrupted / "lightning_logs" / "run")
    val_a = read_scalars(uninterrupted / "lightning_logs" / "run").scalars["val/loss"]
    val_b = read_scalars(killed / "lightning_logs" / "run").scalars["val/loss"]
    assert np.array_equal(val_a[0], val_b[0]) and np.array_equal(val_a[1], val_b[1])


def _windows(num_windows: int = 40) -> TrajectoryWindows:
    rng = np.random.default_rng(0)
    episodes = [
        Episode(rng.standard_normal((n, 2)).astype(np.float32), rng.standard_normal((n, 1)).astype(np.float32),
                rng.standard_normal(n).astype(np.float32), True, False, i)
        for i, n in enumerate((9, 14, 5))
    ]  # fmt: skip
    return TrajectoryWindows(episodes, context_len=4, num_windows=num_windows, seed=3)


def _loader(dataset: TrajectoryWindows) -> StatefulDataLoader:
    return StatefulDataLoader(dataset, batch_size=8, shuffle=False, collate_fn=collate_windows)


def _fingerprints(batches) -> list[bytes]:
    return [b["observations"].numpy().tobytes() + b["timesteps"].numpy().tobytes() for b in batches]


def test_loader_state_resumes_mid_epoch_and_at_epoch_end():
    dataset = _windows()
    loader = _loader(dataset)
    dataset.set_epoch(2)
    full = _fingerprints(loader)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()

    fresh_data = _windows()  # a new process: epoch 0 until the state says otherwise
    fresh = _loader(fresh_data)
    fresh.load_state_dict(state)
    assert _fingerprints(fresh) == full[2:]  # the rest of the epoch 2, not its beginning
    assert fresh_data.epoch == 2
    assert _fingerprints(fresh) == full  # then whole epochs again

    list(it)  # an epoch served completely: resuming starts a whole new one
    done = _windows()
    resumed = _loader(done)
    resumed.load_state_dict(loader.state_dict())
    assert len(_fingerprints(resumed)) == len(loader)


def test_shuffled_loader_resumes_in_the_same_order():
    dataset = _windows()
    torch.manual_seed(7)
    loader = StatefulDataLoader(dataset, batch_size=8, shuffle=True, collate_fn=collate_windows)
    it = iter(loader)
    head = _fingerprints([next(it)])
    state = loader.state_dict()
    rest = _fingerprints(it)
    torch.manual_seed(7)
    other = StatefulDataLoader(_windows(), batch_size=8, shuffle=True, collate_fn=collate_windows)
    other.load_state_dict(state)
    assert _fingerprints(other) == rest and head[0] not in rest


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    callback = RNGStateCheckpoint()
    torch.manual_seed(1), np.random.seed(1)
    torch.save(callback.state_dict(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3))
    restored = RNGStateCheckpoint()
    restored.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True))  # as Lightning loads
    torch.manual_seed(99), np.random.seed(99)
    restored.on_train_batch_start(None, None, None, 0)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
