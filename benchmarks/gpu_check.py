"""The measurements of the first GPU check (``benchmarks/gpu_check.sh`` runs them in turn).

    python benchmarks/gpu_check.py probe         # which official kernels are usable, and why not
    python benchmarks/gpu_check.py kernels       # kernel vs PyTorch: scan and conv, fwd+bwd
    python benchmarks/gpu_check.py throughput    # Decision Mamba training steps/s per backend

``kernels`` times one Mamba layer's selective scan and causal convolution at (B=16, L=1024,
d_model=256, so d_inner=512, d_state=16, width 4), forward + backward, through
``backend="cuda"`` (the official kernels) and ``backend="torch"``, alternating repetitions,
and checks that both give the same output. ``throughput`` trains the Decision Mamba agent
(K=20, width 128, 3 layers, batch 64, synthetic Pendulum-shaped batches: no dataset needed)
with ``backend="cuda"`` and ``backend="torch"``, in alternating chunks of steps. Every
subcommand prints a table, then ``RESULT`` lines.

Without a CUDA device each subcommand prints ``SKIP ...`` and exits 0, unless ``--device cpu``
asks to run the same code on the CPU (``backend="auto"`` against ``"torch"``: a smoke test of
this script, not a measurement).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling timing module, however loaded
from timing import train_step

from lit_seqrl.ops.backend import missing_kernel, probe_kernel
from lit_seqrl.ops.causal_conv import KERNEL_EXTENSIONS as CONV_EXTENSIONS
from lit_seqrl.ops.causal_conv import KERNEL_MODULE as CONV_MODULE
from lit_seqrl.ops.causal_conv import causal_conv1d
from lit_seqrl.ops.selective_scan import SCAN_EXTENSIONS, SCAN_MODULE, STATE_UPDATE_MODULE, selective_scan
from lit_seqrl.ops.ssd import KERNEL_MODULE as SSD_MODULE

#: (label, Python module, compiled extensions) of every official kernel lit-seqrl dispatches to.
KERNELS = (
    ("selective_scan (Mamba-1)", SCAN_MODULE, SCAN_EXTENSIONS),
    ("causal_conv1d", CONV_MODULE, CONV_EXTENSIONS),
    ("mamba_chunk_scan_combined (Mamba-2)", SSD_MODULE, ()),
    ("selective_state_update (step)", STATE_UPDATE_MODULE, ()),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("probe", help="which official kernels import, with their compiled extensions")
    k = sub.add_parser("kernels", help="kernel vs PyTorch for the scan and the conv, fwd+bwd")
    k.add_argument("--batch", type=int, default=16)
    k.add_argument("--length", type=int, default=1024)
    k.add_argument("--d-model", type=int, default=256)
    k.add_argument("--d-state", type=int, default=16)
    k.add_argument("--width", type=int, default=4)
    k.add_argument("--reps", type=int, default=5, help="timed repetitions per variant (alternating)")
    t = sub.add_parser("throughput", help="Decision Mamba training steps/s with each backend")
    t.add_argument("--steps", type=int, default=40, help="timed training steps per backend")
    t.add_argument("--chunk", type=int, default=10, help="steps per chunk; backends take turns")
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--context", type=int, default=20, help="K, steps per window (3K tokens)")
    t.add_argument("--d-model", type=int, default=128)
    t.add_argument("--n-layers", type=int, default=3)
    for sp in (k, t):
        sp.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
        sp.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in (
        "batch",
        "length",
        "d_model",
        "d_state",
        "width",
        "reps",
        "steps",
        "chunk",
        "context",
        "n_layers",
    ):
        if getattr(args, name, 1) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def fast_backend(device: str) -> str:
    """The backend measured against ``"torch"``: the official kernels on CUDA, ``"auto"`` on CPU."""
    return "cuda" if device == "cuda" else "auto"


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def alternate(variants: dict[str, Callable[[], object]], reps: int, device: str) -> dict[str, float]:
    """Best wall time (s) of each variant over ``reps`` rounds; variants take turns every round."""
    for fn in variants.values():  # warm-up: kernel autotuning, allocator, first-call costs
        fn()
    synchronize(device)
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(reps):
        for name, fn in variants.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def cmd_probe() -> int:
    usable = 0
    print(f"{'kernel':<38} status")
    for label, module, extensions in KERNELS:
        ok = probe_kernel(module, extensions) is not None
        usable += ok
        print(f"{label:<38} {'usable' if ok else missing_kernel(module, extensions)}")
    print(f"RESULT kernels_usable: {usable}/{len(KERNELS)} (goal {len(KERNELS)}/{len(KERNELS)})")
    return 0


def scan_and_conv_inputs(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """One Mamba layer's scan and conv arguments at the given size, on ``args.device``."""
    g = torch.Generator().manual_seed(args.seed)
    b, L, d, n = args.batch, args.length, 2 * args.d_model, args.d_state

    def rand(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale + shift).to(args.device)

    return {
        "u": rand(b, d, L),
        "delta": rand(b, d, L, scale=0.5, shift=-2.0),
        "A": -torch.arange(1.0, n + 1).repeat(d, 1).to(args.device),
        "B": rand(b, n, L),
        "C": rand(b, n, L),
        "D": torch.ones(d, device=args.device),
        "z": rand(b, d, L),
        "delta_bias": rand(d, scale=0.1),
        "weight": rand(d, args.width, scale=0.5),
        "bias": rand(d, scale=0.1),
    }


def fwd_bwd(
    op: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor], names: tuple[str, ...], **kw
) -> Callable[[], torch.Tensor]:
    """A closure running ``op`` forward and backward on fresh leaves; returns the output."""

    def run() -> torch.Tensor:
        leaves = {k: inputs[k].detach().requires_grad_(True) for k in names}
        out = op(**leaves, **kw)
        out.sum().backward()
        return out.detach()

    return run


def cmd_kernels(args: argparse.Namespace) -> int:
    fast = fast_backend(args.device)
    x = scan_and_conv_inputs(args)
    scan_names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

    def scan(backend: str) -> Callable[[], torch.Tensor]:
        return fwd_bwd(selective_scan, x, scan_names, delta_softplus=True, backend=backend)

    def conv(backend: str) -> Callable[[], torch.Tensor]:
        return fwd_bwd(
            causal_conv1d, {**x, "x": x["u"]}, ("x", "weight", "bias"), activation="silu", backend=backend
        )

    rows, results = [], {}
    for name, make in (("scan", scan), ("conv", conv)):
        diff = (make(fast)() - make("torch")()).abs().max().item()
        times = alternate({"kernel": make(fast), "torch": make("torch")}, args.reps, args.device)
        results[name] = times["torch"] / times["kernel"]
        rows.append((name, 1e3 * times["kernel"], 1e3 * times["torch"], results[name], diff))
    shape = f"B={args.batch} L={args.length} d_model={args.d_model} (d_inner={2 * args.d_model}) N={args.d_state} W={args.width}"
    print(f"fwd+bwd, {shape}, device {args.device}, backends {fast!r} vs 'torch', best of {args.reps}")
    print(f"{'op':<6} {'kernel ms':>10} {'torch ms':>10} {'speedup':>8} {'max |diff|':>11}")
    for name, tk, tt, s, diff in rows:
        print(f"{name:<6} {tk:10.2f} {tt:10.2f} {s:7.1f}x {diff:11.2e}")
    print(f"RESULT scan_kernel_speedup_fwd_bwd: {results['scan']:.1f} x (goal >= 5)")
    print(f"RESULT conv_kernel_speedup_fwd_bwd: {results['conv']:.1f} x (goal >= 1)")
    return 0


def decision_mamba(args: argparse.Namespace, backend: str):
    from lit_seqrl.agents import DecisionAgent

    spec = {
        "obs_dim": 3,
        "act_dim": 1,
        "discrete": False,
        "max_timestep": 1000,
        "action_low": [-2.0],
        "action_high": [2.0],
    }  # fmt: skip  (Pendulum's shapes)
    backbone = {"name": "mamba", "d_model": args.d_model, "n_layers": args.n_layers, "backend": backend}
    return DecisionAgent(backbone=backbone, eval_episodes=0, warmup_steps=1, data_spec=spec).to(args.device)


def synthetic_batch(args: argparse.Namespace, g: torch.Generator) -> dict[str, torch.Tensor]:
    b, K = args.batch, args.context
    start = torch.randint(0, 900, (b, 1), generator=g)
    batch = {
        "observations": torch.randn(b, K, 3, generator=g),
        "actions": torch.rand(b, K, 1, generator=g) * 4 - 2,
        "returns_to_go": torch.randn(b, K, 1, generator=g),
        "timesteps": start + torch.arange(K),
        "mask": torch.ones(b, K, dtype=torch.bool),
    }
    return {k: v.to(args.device) for k, v in batch.items()}


def cmd_throughput(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    batches = [synthetic_batch(args, g) for _ in range(args.chunk)]
    backends = (fast_backend(args.device), "torch")
    agents = {name: decision_mamba(args, name) for name in backends}
    opts = {name: agent.configure_optimizers()["optimizer"] for name, agent in agents.items()}

    def chunk(name: str) -> None:
        agent, opt = agents[name], opts[name]
        for batch in batches:
            train_step(agent, opt, batch)

    for name in backends:
        agents[name].train()
        chunk(name)  # warm-up
    spent = dict.fromkeys(backends, 0.0)
    rounds = max(1, args.steps // args.chunk)
    for _ in range(rounds):
        for name in backends:
            synchronize(args.device)
            start = time.perf_counter()
            chunk(name)
            synchronize(args.device)
            spent[name] += time.perf_counter() - start
    steps = rounds * args.chunk
    rate = {name: steps / spent[name] for name in backends}
    print(f"Decision Mamba training (K={args.context}, width {args.d_model}, {args.n_layers} layers, "
          f"batch {args.batch}), {steps} steps per backend in chunks of {args.chunk}, device {args.device}")  # fmt: skip
    print(f"{'backend':<8} {'steps/s':>9} {'windows/s':>10}")
    for name in backends:
        print(f"{name:<8} {rate[name]:9.1f} {rate[name] * args.batch:10.0f}")
    print(f"RESULT dmamba_train_steps_per_s_{backends[0]}: {rate[backends[0]]:.1f} steps/s (goal > torch)")
    print(f"RESULT dmamba_train_steps_per_s_torch: {rate['torch']:.1f} steps/s (goal: reference)")
    print(f"RESULT dmamba_train_kernel_speedup: {rate[backends[0]] / rate['torch']:.2f} x (goal >= 1.5)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "probe":
        return cmd_probe()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"SKIP gpu_check {args.command}: no CUDA device (torch.cuda.is_available() is False); "
              "nothing measured. Use --device cpu for a smoke run of this script.")  # fmt: skip
        return 0
    return cmd_kernels(args) if args.command == "kernels" else cmd_throughput(args)


if __name__ == "__main__":
    sys.exit(main())
