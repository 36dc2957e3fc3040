"""Test-session settings: datasets go to a temporary directory, never the user's ~/.minari."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    # Set before anything imports minari; subprocesses (CLI tests) inherit it.
    if "LIT_SEQRL_TEST_DATASETS" not in os.environ:
        os.environ["LIT_SEQRL_TEST_DATASETS"] = tempfile.mkdtemp(prefix="lit-seqrl-datasets-")
    os.environ["MINARI_DATASETS_PATH"] = os.environ["LIT_SEQRL_TEST_DATASETS"]
    torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    return Path(os.environ["MINARI_DATASETS_PATH"])
