#!/usr/bin/env bash
# The first GPU check: build the official kernels from carried source distributions, run the GPU
# tests, time kernel vs PyTorch, Decision Mamba training per backend, and vs_peers on CUDA.
# Meant for one offline run of about 8 minutes on one H100/H200 (see benchmarks/README.md,
# "First GPU check", for fetching the source distributions beforehand).
#
#   benchmarks/gpu_check.sh [--sdists DIR] [--skip-install] [--skip STEP,...] [--dry-run]
#
#   --sdists DIR     folder with causal_conv1d-*.tar.gz, mamba_ssm-*.tar.gz and the wheels they
#                    need (default: $GPU_CHECK_SDISTS or benchmarks/sdists)
#   --skip-install   use the kernels already installed in this Python
#   --skip STEPS     comma-separated steps to leave out: install,probe,tests,kernels,throughput,peers
#   --dry-run        print the commands instead of running them (no GPU needed)
#
# Environment: PYTHON (default python3), MAX_JOBS (parallel nvcc jobs, default: cores),
# GPU_CHECK_VS_PEERS_ARGS (default "--quick"), GPU_CHECK_STEP_TIMEOUT (s per step, default 600).
# Prints RESULT lines; a step that fails or times out prints "RESULT gpu_check_<step>: FAILED".
# Without a CUDA device it prints a SKIP line and exits 0 (with --dry-run it lists the steps).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
sdists="${GPU_CHECK_SDISTS:-$here/sdists}"
skip=""
dry_run=0
step_timeout="${GPU_CHECK_STEP_TIMEOUT:-600}"
peers_args="${GPU_CHECK_VS_PEERS_ARGS:---quick}"

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --sdists) [ $# -ge 2 ] || { echo "error: --sdists needs a folder" >&2; exit 2; }; sdists="$2"; shift 2 ;;
        --sdists=*) sdists="${1#*=}"; shift ;;
        --skip-install) skip="$skip,install"; shift ;;
        --skip) [ $# -ge 2 ] || { echo "error: --skip needs a list of steps" >&2; exit 2; }; skip="$skip,$2"; shift 2 ;;
        --skip=*) skip="$skip,${1#*=}"; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for s in ${skip//,/ }; do
    case "$s" in
        install|probe|tests|kernels|throughput|peers) ;;
        *) echo "error: unknown step '$s' in --skip (steps: install,probe,tests,kernels,throughput,peers)" >&2; exit 2 ;;
    esac
done

skipped() { case ",$skip," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# step NAME CMD...: run (or print) one step under the time limit, report its outcome.
failures=0
step() {
    local name="$1"; shift
    if skipped "$name"; then echo "== $name: skipped (--skip)"; return 0; fi
    echo "== $name: $*"
    [ "$dry_run" = 1 ] && return 0
    local start=$SECONDS
    timeout "$step_timeout" "$@"
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    if [ "$rc" != 0 ]; then
        failures=$((failures + 1))
        echo "RESULT gpu_check_$name: FAILED (exit $rc$([ "$rc" = 124 ] && echo ", timed out after ${step_timeout} s")) (goal: passes)"
    fi
}

cd "$repo" || exit 2
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

if [ "$dry_run" = 0 ]; then
    if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "SKIP gpu_check: no CUDA device visible to $python (torch.cuda.is_available() is False); nothing was run"
        exit 0
    fi
    "$python" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'device: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}; torch {torch.__version__}, CUDA {torch.version.cuda}')"
fi

# 1. Build and install the kernels offline, from the carried folder. The selective-scan
#    extension is compiled only with MAMBA_KEEP_CUDA_BUILD=TRUE; FORCE_BUILD stops setup.py from
#    trying to download a prebuilt wheel. Wheels built here are kept in $sdists/built, so a
#    second run installs them without compiling again.
install_kernels() {
    local conv mamba
    conv=$(ls "$sdists"/causal_conv1d-*.tar.gz 2>/dev/null | tail -n 1)
    mamba=$(ls "$sdists"/mamba_ssm-*.tar.gz 2>/dev/null | tail -n 1)
    if [ -z "$conv" ] || [ -z "$mamba" ]; then
        echo "error: $sdists must hold causal_conv1d-*.tar.gz and mamba_ssm-*.tar.gz (see benchmarks/README.md, 'First GPU check')" >&2
        return 3
    fi
    mkdir -p "$sdists/built"
    env MAMBA_KEEP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
        MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$python" -m pip wheel --no-index --find-links "$sdists" --find-links "$sdists/built" \
        --no-build-isolation --no-deps -w "$sdists/built" "$conv" "$mamba" || return $?
    "$python" -m pip install --no-index --find-links "$sdists" --find-links "$sdists/built" \
        "$sdists"/built/causal_conv1d-*.whl "$sdists"/built/mamba_ssm-*.whl || return $?
    "$python" -c "import selective_scan_cuda, causal_conv1d_cuda; print('compiled extensions import')"
}
export -f install_kernels  # timeout runs commands, not shell functions: hand it to a child bash
export python sdists
step install bash -c install_kernels

# 2. What lit-seqrl sees, then the GPU tests (they compare every kernel with the PyTorch path).
step probe "$python" benchmarks/gpu_check.py probe
step tests "$python" -m pytest -q -m gpu -p no:cacheprovider tests
# 3. Kernel vs PyTorch at (B=16, L=1024, d_model=256), forward + backward.
step kernels "$python" benchmarks/gpu_check.py kernels
# 4. Decision Mamba training throughput with each backend.
step throughput "$python" benchmarks/gpu_check.py throughput
# 5. Our DT against its peers on the GPU (peers that are not installed are skipped).
# shellcheck disable=SC2086  # the extra arguments are meant to split
step peers "$python" benchmarks/vs_peers.py --device cuda $peers_args

echo "RESULT gpu_check_failed_steps: $failures (goal 0)"
[ "$failures" = 0 ]
