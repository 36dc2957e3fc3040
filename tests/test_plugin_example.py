"""The example plugin package (examples/third_party_backbone) installed the way a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO, TINY, run_cli

EXAMPLE = REPO / "examples" / "third_party_backbone"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """``pip install`` the example into a private directory (offline, no build isolation)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    # Build from a copy: pip builds in-tree and would leave build/ and *.egg-info in the repository.
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp / "site"
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        [*cmd, "--target", str(site), str(src)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "lit_seqrl_lru").is_dir()
    return site


def run_cli_with_plugin(site, *args):
    """``lit-seqrl ARGS`` with the plugin installed in ``site``.

    run_cli pins PYTHONPATH to the repository; ``python -m`` puts the working directory first on
    sys.path, so running from ``site`` is an environment where the plugin is installed (its
    module and its dist-info with the entry point are found there). Outputs go to --trainer
    .default_root_dir, not the working directory.
    """
    return run_cli(*args, cwd=site)


def test_backbones_lists_the_plugin_with_its_distribution(plugin_site):
    listing = run_cli_with_plugin(plugin_site, "backbones").stdout
    row = next(line for line in listing.splitlines() if line.startswith("lru "))
    assert row.split()[1:] == ["lit-seqrl-lru", "lit_seqrl_lru.lru.LRUBackbone"]


def test_plugin_passes_its_own_tests(plugin_site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(REPO)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 passed" in proc.stdout


def test_train_a_decision_transformer_with_the_plugin_backbone(plugin_site, tmp_path):
    run_cli_with_plugin(
        plugin_site,
        "fit", "--config", str(REPO / "configs" / "dt_pendulum.yaml"), *TINY,
        "--model.backbone.name=lru", "--model.eval_mode=recurrent",  # recurrent: rollouts use `step`
        "--trainer.max_steps=4", "--trainer.val_check_interval=4", "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={tmp_path}",
    )  # fmt: skip
    import torch

    (ckpt,) = tmp_path.rglob("last.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["backbone"]["name"] == "lru"
    assert any(key.startswith("backbone.blocks.0.lru.") for key in state["state_dict"])
