"""`lit-seqrl plot`: TensorBoard scalars -> PNG learning curves, seeds as mean ± std bands."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lit_seqrl.cli import main
from lit_seqrl.evaluation.plots import Run, find_runs, group_runs, mean_std, read_scalars

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path, seed: int, steps: int = 40, eval_every: int = 10) -> Path:
    """A Lightning-shaped run: <run_dir>/lightning_logs/version_0/events.out.tfevents.*"""
    from torch.utils.tensorboard import SummaryWriter

    log_dir = run_dir / "lightning_logs" / "version_0"
    rng = np.random.default_rng(seed)
    with SummaryWriter(str(log_dir)) as writer:
        for step in range(steps):
            writer.add_scalar("train/loss", float(np.exp(-step / 15) + 0.05 * rng.random()), step)
            if step % eval_every == eval_every - 1:
                writer.add_scalar("eval/return", float(-1000 + 20 * step + 30 * rng.standard_normal()), step)
                writer.add_scalar("eval/normalized_score", float(step * 2.5 + rng.standard_normal()), step)
    return log_dir


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for seed in range(3):
        write_run(root / "dt" / f"seed{seed}", seed)
    for seed in range(2):
        write_run(root / "lstm" / f"seed{seed}", 10 + seed, eval_every=5)
    return root


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is suspiciously small ({len(data)} bytes)"


def test_read_scalars_and_grouping(runs_root):
    run_dirs = find_runs([runs_root])
    assert len(run_dirs) == 5
    runs = [read_scalars(d) for d in run_dirs]
    steps, values = runs[0].scalars["train/loss"]
    assert steps.tolist() == list(range(40)) and values.shape == (40,)
    assert runs[0].root.name == "seed0"  # lightning_logs/version_0 looked through
    parent = group_runs(runs, "parent")
    assert {k: len(v) for k, v in parent.items()} == {"dt": 3, "lstm": 2}
    assert len(group_runs(runs, "none")) == 5
    assert {k: len(v) for k, v in group_runs(runs, "root").items()} == {
        f"{m}/seed{s}": 1 for m, n in (("dt", 3), ("lstm", 2)) for s in range(n)
    }


def test_prefix_grouping_and_mean_std():
    runs = [
        Run(Path(f"/x/{name}/lightning_logs/version_0")) for name in ("dt_seed0", "dt-s1", "s4_7", "s4_8")
    ]
    assert {k: len(v) for k, v in group_runs(runs, "prefix").items()} == {"dt": 2, "s4": 2}
    assert Run(Path("/x/a/lightning_logs/fixed")).root == Path("/x/a")  # a fixed logger version
    assert Run(Path("/x/a/mylogs/version_3")).root == Path("/x/a/mylogs")  # a logger with its own name
    same = [(np.arange(3), np.array([1.0, 2.0, 3.0])), (np.arange(3), np.array([3.0, 2.0, 1.0]))]
    steps, mean, std = mean_std(same)
    assert (
        steps.tolist() == [0, 1, 2] and mean.tolist() == [2.0, 2.0, 2.0] and std.tolist() == [1.0, 0.0, 1.0]
    )
    # Different logging steps: interpolated onto the union within the common range.
    steps, mean, _ = mean_std(
        [(np.array([0, 10]), np.array([0.0, 10.0])), (np.array([5, 15]), np.array([5.0, 15.0]))]
    )
    assert steps.tolist() == [5, 10] and mean.tolist() == [5.0, 10.0]


def test_plot_command_writes_pngs(runs_root, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    main(["plot", str(runs_root / "dt"), str(runs_root / "lstm"), "--out", str(out), "--smooth", "0.3"])
    names = sorted(p.name for p in out.iterdir())
    assert names == ["eval_normalized_score.png", "eval_return.png", "train_loss.png"]
    for path in out.iterdir():
        assert_png(path)
    assert capsys.readouterr().out.split() == [
        str(out / n) for n in ["train_loss.png", "eval_return.png", "eval_normalized_score.png"]
    ]


def test_plot_errors(runs_root, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit) as info:
        main(["plot", str(tmp_path / "absent")])
    assert info.value.code == f"lit-seqrl plot: error: no such directory: {tmp_path / 'absent'}"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as info:
        main(["plot", str(empty)])
    assert info.value.code == f"lit-seqrl plot: error: no TensorBoard event files under {empty}"
    with pytest.raises(SystemExit) as info:
        main(["plot", str(runs_root / "dt"), "--tags", "val/loss", "--out", str(tmp_path / "p")])
    assert info.value.code == (
        "lit-seqrl plot: error: the runs logged none of ['val/loss']; "
        "they logged: eval/normalized_score, eval/return, train/loss"
    )


def test_missing_matplotlib_gives_the_install_hint(runs_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(SystemExit) as info:
        main(["plot", str(runs_root), "--out", str(tmp_path / "p")])
    assert (
        info.value.code
        == 'lit-seqrl plot: error: lit-seqrl plot needs matplotlib: pip install "lit-seqrl[plot]"'
    )
