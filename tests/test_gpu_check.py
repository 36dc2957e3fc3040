"""The CPU-side logic of the first GPU check (benchmarks/gpu_check.sh and gpu_check.py).

Nothing here needs a GPU: argument handling, the clean skip without CUDA, the order of the
steps and how a failing step is reported (with a stand-in interpreter), and a CPU smoke run of
the measuring code.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
needs_bash = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None, reason="bash"
)


def _load_helper():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load_helper()


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def results(text: str) -> dict[str, str]:
    return dict(re.findall(r"^RESULT (\w+): (.*)$", text, re.M))


def test_helper_rejects_bad_sizes():
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["kernels", "--batch", "0"])
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["throughput", "--device", "tpu"])
    args = gpu_check.parse_args(["kernels"])
    assert (args.batch, args.length, args.d_model, args.device) == (16, 1024, 256, "cuda")


@no_cuda
@pytest.mark.parametrize("command", ["kernels", "throughput"])
def test_helper_skips_cleanly_without_cuda(command, capsys):
    assert gpu_check.main([command]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"SKIP gpu_check {command}: no CUDA device") and "RESULT" not in out


def test_helper_probe_reports_every_kernel(capsys):
    assert gpu_check.main(["probe"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 2 + len(gpu_check.KERNELS)
    assert re.fullmatch(r"\d/4 \(goal 4/4\)", results(out)["kernels_usable"])


def test_helper_kernel_timing_smoke_on_cpu(capsys):
    assert gpu_check.main(["kernels", "--device", "cpu", "--batch", "2", "--length", "16", "--d-model", "8",
                           "--reps", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    res = results(out)
    assert set(res) == {"scan_kernel_speedup_fwd_bwd", "conv_kernel_speedup_fwd_bwd"}
    assert all(re.fullmatch(r"\d+\.\d x \(goal >= \d+\)", v) for v in res.values())
    diffs = [float(line.split()[-1]) for line in out.splitlines() if line.startswith(("scan ", "conv "))]
    assert diffs == [0.0, 0.0]  # on CPU both variants are the PyTorch path


def test_alternate_takes_turns_and_keeps_the_best():
    calls = []
    best = gpu_check.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, "cpu")
    assert calls == ["a", "b"] * 4  # one warm-up round, then 3 alternating rounds
    assert set(best) == {"a", "b"} and all(0 <= t < 1 for t in best.values())


@pytest.mark.slow
def test_helper_throughput_smoke_on_cpu(capsys):
    argv = ["throughput", "--device", "cpu", "--steps", "2", "--chunk", "1", "--batch", "2", "--context", "3",
            "--d-model", "8", "--n-layers", "1"]  # fmt: skip
    assert gpu_check.main(argv) == 0
    assert {"dmamba_train_kernel_speedup", "dmamba_train_steps_per_s_torch"} <= set(
        results(capsys.readouterr().out)
    )


@needs_bash
@no_cuda
def test_script_skips_cleanly_without_cuda():
    proc = run_script()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("SKIP gpu_check: no CUDA device") and "RESULT" not in proc.stdout


@needs_bash
def test_script_arguments():
    proc = run_script("--dry-run", "--skip", "tests,peers", "--sdists", "/nowhere")
    assert proc.returncode == 0, proc.stderr
    steps = re.findall(r"^== (\w+): (.*)$", proc.stdout, re.M)
    assert [s for s, _ in steps] == ["install", "probe", "tests", "kernels", "throughput", "peers"]
    assert dict(steps)["tests"] == dict(steps)["peers"] == "skipped (--skip)"
    assert dict(steps)["kernels"].endswith("benchmarks/gpu_check.py kernels")
    for bad in (["--skip", "everything"], ["--frobnicate"], ["--sdists"]):
        proc = run_script(*bad)
        assert proc.returncode == 2 and "error:" in proc.stderr


FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in interpreter: logs every call, claims a GPU, fails the step named in $FAIL_ON.
echo "$*" >> "$CALL_LOG"
case "$*" in
  *"$FAIL_ON"*) exit 1 ;;
  *"get_device_properties"*) echo "device: fake" ;;
esac
exit 0
"""


@needs_bash
@pytest.mark.parametrize("with_sdists", [True, False])
def test_script_runs_the_steps_in_order_and_reports_failures(tmp_path, with_sdists):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    if with_sdists:
        for name in ("causal_conv1d-1.5.0.tar.gz", "mamba_ssm-2.2.4.tar.gz"):
            (sdists / name).write_bytes(b"")
    log = tmp_path / "calls.log"
    proc = run_script(
        "--sdists", str(sdists), PYTHON=str(fake), CALL_LOG=str(log), FAIL_ON="gpu_check.py kernels"
    )
    calls = log.read_text().splitlines()
    res = results(proc.stdout)
    assert res["gpu_check_kernels"].startswith("FAILED (exit 1)")
    expected_failures = 1 if with_sdists else 2
    assert res["gpu_check_failed_steps"] == f"{expected_failures} (goal 0)"
    assert proc.returncode != 0
    if with_sdists:  # built with the selective-scan extension kept, then installed offline
        wheel = next(c for c in calls if c.startswith("-m pip wheel"))
        assert "--no-index" in wheel and "--no-build-isolation" in wheel
        assert "mamba_ssm-2.2.4.tar.gz" in wheel and "causal_conv1d-1.5.0.tar.gz" in wheel
        assert any(c.startswith("-m pip install --no-index") for c in calls)
    else:
        assert res["gpu_check_install"].startswith("FAILED (exit 3)")
        assert "must hold causal_conv1d-*.tar.gz" in proc.stderr
    # every later step still ran, in order
    order = [
        m.group(0)
        for c in calls
        if (m := re.match(r"benchmarks/gpu_check\.py \w+|-m pytest|benchmarks/vs_peers", c))
    ]
    assert order == ["benchmarks/gpu_check.py probe", "-m pytest", "benchmarks/gpu_check.py kernels",
                     "benchmarks/gpu_check.py throughput", "benchmarks/vs_peers"]  # fmt: skip
    assert any("vs_peers.py --device cuda --quick" in c for c in calls)


@needs_bash
def test_script_builds_with_mamba_keep_cuda_build(tmp_path):
    # The wheel build must see MAMBA_KEEP_CUDA_BUILD=TRUE, or selective_scan_cuda is not compiled.
    fake = tmp_path / "python"
    fake.write_text('#!/usr/bin/env bash\ncase "$*" in *"pip wheel"*) env > "$ENV_LOG" ;; esac\nexit 0\n')
    fake.chmod(0o755)
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    for name in ("causal_conv1d-1.5.0.tar.gz", "mamba_ssm-2.2.4.tar.gz"):
        (sdists / name).write_bytes(b"")
    env_log = tmp_path / "env.log"
    run_script("--sdists", str(sdists), "--skip", "probe,tests,kernels,throughput,peers", PYTHON=str(fake),
               ENV_LOG=str(env_log))  # fmt: skip
    env = dict(line.split("=", 1) for line in env_log.read_text().splitlines() if "=" in line)
    assert env["MAMBA_KEEP_CUDA_BUILD"] == "TRUE" and env["MAMBA_FORCE_BUILD"] == "TRUE"
    assert env["CAUSAL_CONV1D_FORCE_BUILD"] == "TRUE"
