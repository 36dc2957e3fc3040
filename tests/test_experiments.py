"""``lit-seqrl experiment``: every shipped config parses, every experiment runs end to end on a tiny
budget and writes its table and plot, finished seeds are skipped on a rerun."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from lit_seqrl.data.collect import collect_dataset
from lit_seqrl.experiments import EXPERIMENTS, ExperimentConfig, run_experiment
from lit_seqrl.experiments import runner as runner_module
from tests.helpers import REPO, run_cli

CONFIGS = REPO / "configs" / "experiments"
CARTPOLE = "lit_seqrl/cartpole/mixed-v0"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A small version of the CartPole mixture in a private datasets root (untrained agents fail fast
    on CartPole, so evaluation takes no time)."""
    root = tmp_path_factory.mktemp("datasets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        collect_dataset(CARTPOLE, num_episodes=12, progress=False)
        yield root


def tiny_config(name: str, tmp_path, keep_variants: int = 2) -> str:
    """The shipped config of ``name`` cut down to seconds: two variants, 1-2 targets, 8-window batches."""
    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    raw["datasets"] = {CARTPOLE: {**raw["datasets"][CARTPOLE]}}
    if "targets" in raw["datasets"][CARTPOLE]:
        raw["datasets"][CARTPOLE]["targets"] = [100, 500]
    raw["variants"] = dict(list(raw["variants"].items())[:keep_variants])
    for variant in raw["variants"].values():
        variant["backbone"].update(d_model=8, n_layers=1)
    raw["data"].update(batch_size=4, windows_per_epoch=16, val_fraction=0.0)
    raw.update(eval_num_envs=1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("config", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_parse_and_name_registered_backbones(config):
    from lit_seqrl.registry import list_backbones

    name = config if config in EXPERIMENTS else "backbones"  # mambadm_fusion runs as a backbones experiment
    cfg = ExperimentConfig.load(CONFIGS / f"{config}.yaml")
    specs = EXPERIMENTS[name].specs(cfg)
    assert specs and len({s.cell for s in specs}) == len(specs)  # one directory per cell
    assert {s.model["backbone"]["name"] for s in specs} <= set(list_backbones())


@pytest.mark.parametrize("name", ["conditioning", "context", "delayed"])
def test_experiment_runs_end_to_end_and_writes_table_and_plot(name, datasets, tmp_path):
    pytest.importorskip("matplotlib")
    result = run_experiment(
        name, tiny_config(name, tmp_path, keep_variants=3), seeds=1, max_steps=2, out=tmp_path / "out",
        eval_episodes=1, progress=False,
    )  # fmt: skip
    out = tmp_path / "out"
    table = (out / "results.md").read_text()
    assert table.startswith("# ") and "| " in table and "± " in table
    assert result["plots"] and all(os.path.getsize(p) > 1000 for p in result["plots"])
    assert json.loads((out / "summary.json").read_text())["seeds"] == [0]
    if name == "conditioning":  # one row per target, BC's flat value in every row
        assert "| 100 |" in table and "| 500 |" in table
    if name == "delayed":  # BC is trained once and shown for both reward settings
        cells = {p.name for p in (out / "runs").iterdir()}
        assert any("dt-delayed" in c for c in cells) and not any("bc-delayed" in c for c in cells)


def test_backbones_experiment_through_the_cli_and_resume(datasets, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    config = tiny_config("backbones", tmp_path)
    out = tmp_path / "out"
    env = {"MINARI_DATASETS_PATH": str(datasets)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = ["experiment", "backbones", "--config", config, "--seeds", "2", "--max_steps", "2"]
    proc = run_cli(*args, "--eval_episodes", "1", "--dataset", CARTPOLE, "--out", str(out))
    assert "# Backbones" in proc.stdout and "| DT | transformer |" in proc.stdout
    assert (out / "results.md").is_file() and (out / "backbones.png").is_file()
    assert len(list((out / "runs").rglob("seed*.json"))) == 2 * 2  # 2 variants x 2 seeds

    # A rerun trains nothing: every seed's result exists with the same settings.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished seed was trained again")

    monkeypatch.setattr(runner_module, "train_and_evaluate", no_training)
    again = run_experiment(
        "backbones", config, seeds=2, max_steps=2, out=out, eval_episodes=1, progress=False
    )
    assert again["markdown"].strip() == (out / "results.md").read_text().strip()
    # ... while a changed setting runs again (here: a third seed).
    with pytest.raises(AssertionError, match="trained again"):
        run_experiment("backbones", config, seeds=3, max_steps=2, out=out, eval_episodes=1, progress=False)


def test_bad_experiment_inputs_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {x: {}}\nvariants: {A: {backbone: {name: transformer}, agent: ppo}}\n")
    proc = run_cli("experiment", "context", "--config", str(bad), check=False)
    assert proc.stderr.strip().splitlines()[-1].startswith("lit-seqrl experiment: error: ")
    assert "agent must be one of" in proc.stderr
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        run_experiment("nope", bad)


def test_backbones_shares_conditioning_runs_and_reports_the_target_return_row(tmp_path):
    from lit_seqrl.experiments import backbones

    cfg = ExperimentConfig.load(CONFIGS / "mujoco_hopper.yaml")
    mr = "d4rlstyle/hopper/medium-replay-v0"
    cfg.datasets = {mr: {**cfg.datasets[mr], "targets": [500, 3600], "target_return": 3600}}
    cfg.variants = {k: cfg.variants[k] for k in ("DT", "BC")}
    specs = {s.cell: s.key() for s in backbones.specs(cfg)}
    assert specs == {s.cell: s.key() for s in EXPERIMENTS["conditioning"].specs(cfg)}  # one cache serves both

    def record(variant: str, rows: list[tuple[float, float]], conditioned: bool) -> dict:
        report = {"results": [{"target_return": t, "normalized_score": v} for t, v in rows]}
        report["return_conditioned"] = conditioned
        return {
            "spec": {"labels": {"variant": variant, "dataset": mr}},
            "report": report,
            "train_seconds": 1.0,
        }

    results = [
        record("DT", [(500.0, 11.0), (3600.0, 77.0)], True),
        record("BC", [(1234.0, 33.0)], False),  # BC's only row carries the data's best return
    ]
    markdown, _ = backbones.report(cfg, results, [0], tmp_path)
    cells = [
        [c.strip() for c in line.split("|")[1:-1]] for line in markdown.splitlines() if line.startswith("| ")
    ]
    rows = {c[0]: c[2] for c in cells if c[0] in ("DT", "BC")}
    assert rows == {"DT": "77.0 ± 0.0", "BC": "33.0 ± 0.0"}


def test_context_at_equal_targets_scales_the_batch_by_max_k_over_k():
    cfg = ExperimentConfig.load(CONFIGS / "mujoco_hopper_context.yaml")
    cfg.extra["contexts"] = [1, 5, 20]
    got = {s.data["context_len"]: s.data["batch_size"] for s in EXPERIMENTS["context"].specs(cfg)}
    assert got == {1: 1280, 5: 256, 20: 64}  # 1280 action targets per step at every K
    cfg.extra["equal_targets"] = False
    assert {s.data.get("batch_size") for s in EXPERIMENTS["context"].specs(cfg)} == {64}
