"""The default job learns: DT on the generated Pendulum mixture, conditioned on the expert return.

The goal is a normalised score of 80 (0 = random-policy data, 100 = expert data). The default
budget (3000 steps, about 8 minutes on 2 cores) reaches about 37 on fresh seeds today: the DT fits
the expert's actions but drifts off the expert's states in closed loop (README, "Known
limitations"). The bound below is the level the default config reliably clears, well above a policy
that ignores the data (score 0), so a regression in training or evaluation still fails here.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, run_cli


@pytest.mark.slow
def test_default_config_learns_pendulum_from_the_mixture(tmp_path):
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
    assert result["normalized_score"] >= 25, result
