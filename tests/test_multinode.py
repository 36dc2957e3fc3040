"""Two "nodes" of one process each on this machine: torchrun rendezvous on 127.0.0.1 with gloo.

Each node is its own ``torchrun --nnodes=2 --node-rank=i --nproc-per-node=1`` launch, as on two
hosts; Lightning reads the torchrun environment and trains with ``num_nodes=2, devices=1``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import REPO, TINY


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Lazy data under DDP end to end: each node reads from the HDF5 file only what it samples.
@pytest.mark.parametrize("data_mode", ["memory", pytest.param("lazy", marks=pytest.mark.slow)])
def test_two_nodes_one_process_each(tmp_path, data_mode):
    probe, port = tmp_path / "probe", _free_port()
    fit = [
        "fit", "--config", str(REPO / "configs" / "dt_pendulum.yaml"), *TINY,
        "--trainer.accelerator=cpu", "--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.strategy=ddp",
        "--data.windows_per_epoch=192", "--trainer.max_steps=3", "--trainer.val_check_interval=3",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=tests.probes.WindowRecorder", f"--trainer.callbacks.out_dir={probe}",
        "--trainer.callbacks+=tests.probes.EvalRecorder", f"--trainer.callbacks.out_dir={probe}",
        f"--trainer.default_root_dir={tmp_path}", f"--data.data_mode={data_mode}",
    ]  # fmt: skip
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    env.pop("LOCAL_RANK", None)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={node}",
                "--nproc-per-node=1",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "-m",
                "lit_seqrl",
                *fit,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for node, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"node {node} failed ({proc.returncode}):\n{out[-4000:]}"

    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    expected = {"memory": "TrajectoryWindows", "lazy": "LazyTrajectoryWindows"}[data_mode]
    assert [r["dataset"] for r in ranks] == [expected, expected]
    if data_mode == "lazy":  # 48 windows each: at most 48 episode reads, far from all 300
        assert all(0 < r["episodes_read"] <= 48 for r in ranks), [r["episodes_read"] for r in ranks]
    w0, w1 = (r["windows"] for r in ranks)
    assert len(w0) == len(w1) == 3 * 16  # 3 steps of batch 16 on each rank
    assert not set(w0) & set(w1), "both nodes trained on the same windows"
    assert len(list(tmp_path.rglob("last.ckpt"))) == 1
    reports = [json.loads((probe / f"eval{r}.json").read_text())["reports"] for r in (0, 1)]
    assert len(reports[0]) == 1 and reports[0][0]["results"], "rank 0 logged no evaluation"
    assert reports[0] == reports[1], "the evaluation result differs between ranks"
