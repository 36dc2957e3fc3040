"""The default job learns: DT on the generated Pendulum mixture reaches expert-level returns.

Measured: the best checkpoint of the default run (3000 steps, about 6.5 minutes on 2 cores)
scores 86.6 on these fresh seeds (return -284 against the expert data's -143 and random's -1196).
Without the cosine decay the same model scored 78.3; with ReLU or a single 0.1 input dropout,
67-76: the score moves by several points with such choices, so the margin over 80 is small.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, run_cli


@pytest.mark.slow
def test_default_config_reaches_normalized_score_80_on_pendulum(tmp_path):
    run_cli(
        "fit",
        "--config",
        str(REPO / "configs" / "dt_pendulum.yaml"),
        f"--trainer.default_root_dir={tmp_path}",
        cwd=tmp_path,
        timeout=1800,
    )
    best = [p for p in tmp_path.rglob("best-*.ckpt")]
    assert len(best) == 1
    # Fresh seeds (not those used for checkpoint selection), conditioned on the expert return.
    proc = run_cli(
        "evaluate",
        "--ckpt_path",
        str(best[0]),
        "--episodes",
        "20",
        "--seed",
        "123456",
        "--target_return",
        "-140",
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])["results"][0]
    assert result["normalized_score"] >= 80, result
