"""The default job learns: DT on the generated Pendulum mixture reaches expert-level returns; so
does Decision Mamba (the pure-PyTorch scan) at a smaller size.

Measured: the best checkpoint of the default run (3000 steps, about 6.5 minutes on 2 cores)
scores 86.6 on these fresh seeds (return -284 against the expert data's -143 and random's -1196).
Without the cosine decay the same model scored 78.3; with ReLU or a single 0.1 input dropout,
67-76: the score moves by several points with such choices, so the margin over 80 is small.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, run_cli


def _fit_and_score_best(tmp_path, config: str, *overrides: str, target: str | None = "-140") -> list[dict]:
    """Fit ``config``, then score its best checkpoint on fresh seeds at ``target`` (the expert
    return by default; None: each of the config's targets)."""
    run_cli(
        "fit",
        "--config",
        str(REPO / "configs" / config),
        f"--trainer.default_root_dir={tmp_path}",
        *overrides,
        cwd=tmp_path,
        timeout=1800,
    )
    best = [p for p in tmp_path.rglob("best-*.ckpt")]
    assert len(best) == 1
    # Fresh seeds (not those used for checkpoint selection).
    targets = ("--target_return", target) if target else ()
    proc = run_cli("evaluate", "--ckpt_path", str(best[0]), "--episodes", "20", "--seed", "123456", *targets)
    return json.loads(proc.stdout.strip().splitlines()[-1])["results"]


@pytest.mark.slow
def test_default_config_reaches_normalized_score_80_on_pendulum(tmp_path):
    (result,) = _fit_and_score_best(tmp_path, "dt_pendulum.yaml")
    assert result["normalized_score"] >= 80, result


@pytest.mark.slow
def test_decision_mamba_learns_pendulum(tmp_path):
    """Width 64, 2 layers, 1500 steps (7-9 minutes on 2 busy cores), scored at the config's two
    targets. Measured, at -140 / -400: 72.8 / 80.9 (seed 0, the config's) and 64.5 / 77.7 (seed 1).
    The data's episodes average 52.5 and a random policy scores about 0."""
    results = _fit_and_score_best(
        tmp_path,
        "dmamba_pendulum.yaml",
        "--model.backbone.d_model=64",
        "--model.backbone.n_layers=2",
        "--trainer.max_steps=1500",
        target=None,
    )
    assert [r["target_return"] for r in results] == [-140.0, -400.0]
    assert max(r["normalized_score"] for r in results) >= 65, results
