"""Multi-process DDP on CPU (gloo): ranks train on different windows, one checkpoint is written."""

from __future__ import annotations

import json

from tests.helpers import REPO, TINY, run_cli


def test_ddp_two_cpu_processes(tmp_path):
    probe = tmp_path / "probe"
    run_cli(
        "fit", "--config", str(REPO / "configs" / "dt_pendulum.yaml"), *TINY,
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", "--data.windows_per_epoch=192",
        "--trainer.max_steps=3", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1",
        "--trainer.callbacks+=tests.probes.WindowRecorder", f"--trainer.callbacks.out_dir={probe}",
        f"--trainer.default_root_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    w0, w1 = (r["windows"] for r in ranks)
    assert len(w0) == len(w1) == 3 * 16  # 3 steps of batch 16 on each rank
    assert not set(w0) & set(w1), "both ranks trained on the same windows"
    assert len(list(tmp_path.rglob("last.ckpt"))) == 1
