"""Our Decision Transformer side by side with Hugging Face transformers' and d3rlpy's, same data.

All three are built at the DT paper's size (K=20, width 128, 3 layers, 1 head, dropout 0.1,
batch 64, AdamW lr 1e-4, weight decay 1e-4, grad-clip 0.25) with the same linear LR warm-up, the
same reward scale and the same state normalisation, and trained for the same number of steps on
the same episodes (a built-in lit_seqrl dataset). Each runs its own pipeline:

* ours: ``Trainer.fit`` on the data module; evaluation ``run_episodes`` + ``DecisionPolicy``
  (window mode, all episodes' envs stepped together, one batched forward per step, through
  ``eval_compile``; the compiling pass is untimed and reported);
* HF: ``DecisionTransformerModel`` with the sampler, loss and batch-1 ``get_action`` loop of its
  docs (``peers/hf_dt.py``);
* d3rlpy: ``fit`` and ``as_stateful_wrapper(...).predict`` (batch 1), in a separate interpreter
  (``--d3rlpy-python``, ``peers/d3rlpy_worker.py``) because it pins another gymnasium.

Training is cut into chunks that run in turn (ours, HF, d3rlpy, rotated each round), so machine
load hits all peers alike; steps/s is the median over the timed chunks (the first is warm-up).
The FLOP utilisation is our training step's FLOPs (``FlopCounterMode``, forward + backward) times
our median steps/s over the fp32 ``torch.mm`` throughput measured between the chunks.

``--device cuda`` puts every peer (training and acting) on the first GPU; chunk and matmul timings
then synchronise the device first, and the matmul peak is fp32 with TF32 off (PyTorch's default),
the precision all three train in.

    python benchmarks/vs_peers.py [--env pendulum|cartpole] [--quick] [--threads 2]
        [--d3rlpy-python PATH] [--train-steps 1000] [--chunk 25] [--device cpu|cuda]
    python benchmarks/vs_peers.py --experiments     # candidate speed-ups of our step (part 2)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.flop_counter import FlopCounterMode

from lit_seqrl.agents import DecisionAgent
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.data import OfflineTrajectoryDataModule
from lit_seqrl.data.collect import ensure_dataset
from lit_seqrl.data.episodes import load_offline_dataset
from lit_seqrl.evaluation.rollout import run_episodes

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# dataset, reward scale, default training budget (steps)
ENVS = {
    "pendulum": ("lit_seqrl/pendulum/mixed-v0", 0.01, 1000),
    "cartpole": ("lit_seqrl/cartpole/mixed-v0", 0.01, 500),
}
PAPER = dict(
    context_len=20,
    d_model=128,
    n_layers=3,
    n_heads=1,
    dropout=0.1,
    batch_size=64,
    lr=1e-4,
    weight_decay=1e-4,
    grad_clip=0.25,
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=sorted(ENVS), default="pendulum")
    p.add_argument("--quick", action="store_true", help="small budget: a smoke run in about a minute")
    p.add_argument("--threads", type=int, default=None, help="torch threads for every peer (default: cores)")
    p.add_argument("--train-steps", type=int, default=None, help="training budget per peer")
    p.add_argument("--chunk", type=int, default=25, help="steps per timed training chunk")
    p.add_argument("--warmup-steps", type=int, default=100, help="linear LR warm-up, every peer")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--eval-repeats", type=int, default=2, help="timed evaluation passes per peer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every peer runs")
    p.add_argument("--d3rlpy-python", default=None, help="interpreter that can `import d3rlpy`")
    p.add_argument("--skip", default="", help="comma-separated peers to leave out: hf,d3rlpy")
    p.add_argument(
        "--ours-patch",
        default="",
        help="comma-separated candidate speed-ups applied to ours in this run (see vs_peers_experiments.PATCHES)",
    )
    p.add_argument(
        "--experiments",
        nargs="?",
        const="train,loop,eval",
        default=None,
        help="measure candidate speed-ups of ours instead (sections: train,loop,eval)",
    )
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device here")
    if args.device == "cuda" and args.experiments:
        p.error("--experiments measures CPU variants of our step; run it without --device cuda")
    args.threads = args.threads or os.cpu_count() or 1
    if args.train_steps is None:
        args.train_steps = 100 if args.quick else ENVS[args.env][2]
    if args.quick:
        args.chunk, args.episodes, args.eval_repeats = min(args.chunk, 10), min(args.episodes, 3), 1
    return args


# --------------------------------------------------------------------------- data and settings
def prepare(args: argparse.Namespace) -> tuple[OfflineTrajectoryDataModule, dict, dict[str, np.ndarray]]:
    """Our data module, the shared settings every peer is built from, and the episodes as arrays."""
    dataset_id, reward_scale, _ = ENVS[args.env]
    ensure_dataset(dataset_id)
    dm = OfflineTrajectoryDataModule(
        dataset_id,
        context_len=PAPER["context_len"],
        batch_size=PAPER["batch_size"],
        reward_scale=reward_scale,
        val_fraction=0.0,  # every peer trains on every episode
        windows_per_epoch=PAPER["batch_size"] * args.train_steps,
        seed=args.seed,
    )
    dm.setup("fit")
    data_spec = dm.data_spec()
    ds = load_offline_dataset(dataset_id)
    eps = ds.episodes
    arrays = {
        "observations": np.concatenate([e.observations for e in eps]).astype(np.float32),
        "actions": np.concatenate([e.actions for e in eps]),
        "rewards": np.concatenate([e.rewards for e in eps]).astype(np.float32),
        "terminals": np.concatenate([_last(e.length, e.terminated) for e in eps]),
        "timeouts": np.concatenate([_last(e.length, not e.terminated) for e in eps]),
        "lengths": np.array([e.length for e in eps], dtype=np.int64),
    }
    spec = {
        **PAPER,
        "env_id": data_spec["env_id"],
        "discrete": data_spec["discrete"],
        "obs_dim": data_spec["obs_dim"],
        "act_dim": data_spec["act_dim"],
        "max_timestep": data_spec["max_timestep"],
        "action_low": data_spec["action_low"],
        "action_high": data_spec["action_high"],
        "obs_mean": dm.obs_mean.tolist(),
        "obs_std": dm.obs_std.tolist(),
        "reward_scale": reward_scale,
        "warmup_steps": args.warmup_steps,
        "total_steps": args.train_steps,
        "threads": args.threads,
        "seed": args.seed,
        # The expert quality's mean return: the "expert target" every peer is conditioned on.
        "target": float(ds.ref_max_score if ds.ref_max_score is not None else data_spec["target_returns"][0]),
        "dataset": dataset_id,
        "device": args.device,
    }
    return dm, spec, arrays


def backbone_spec(spec: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Our transformer at the peers' size, with their (the DT paper code's) ReLU MLP."""
    keys = ("d_model", "n_layers", "n_heads", "dropout")
    return {"name": "transformer", **{k: spec[k] for k in keys}, "activation": "relu", **overrides}


def make_agent(
    dm: OfflineTrajectoryDataModule, spec: dict[str, Any], agent_cls: type = DecisionAgent, **overrides: Any
) -> DecisionAgent:
    """Our DT at the peers' size, built from ``dm``'s data; ``spec["seed"]`` seeds its weights."""
    torch.manual_seed(spec["seed"])
    kw = dict(
        backbone=backbone_spec(spec),
        lr=spec["lr"],
        weight_decay=spec["weight_decay"],
        warmup_steps=spec["warmup_steps"],
        embed_dropout=spec["dropout"],
        eval_episodes=0,
        data_spec=dm.data_spec(),
    )
    return agent_cls(**{**kw, **overrides})


def _last(n: int, flag: bool) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    out[-1] = float(flag)
    return out


# --------------------------------------------------------------------------- ours
class _Chunks(Callback):
    """Times ``Trainer.fit`` in chunks of steps and calls ``between(seconds, steps)`` after each.

    Our fit runs in the main thread and the other peers' chunks run inside ``between``: PyTorch
    ran our step about 30% slower in a second Python thread on this CPU, so no peer trains there.
    ``between`` returns the size of the next chunk.
    """

    def __init__(self, first: int, between: Callable[[float, int], int]) -> None:
        self.pending, self.between = first, between
        self.size, self.t0 = first, 0.0

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.pending -= 1
        if self.pending == 0:  # a chunk's time includes its batches' loading, as the peers' do
            synchronize(trainer.strategy.root_device)
            seconds = time.perf_counter() - self.t0
            self.size = self.pending = self.between(seconds, self.size)
            self.t0 = time.perf_counter()


class Ours:
    """Our DecisionAgent in the real Lightning loop (``Trainer.fit`` with a chunk timer)."""

    name = "lit-seqrl DecisionAgent"

    def __init__(
        self,
        dm: OfflineTrajectoryDataModule,
        spec: dict[str, Any],
        root: str,
        agent_cls: type = DecisionAgent,
        patches: set[str] | None = None,
    ) -> None:
        self.dm, self.spec, self.root = dm, spec, root
        # Acting through one compiled graph (shipped, opt-in).
        self.agent = make_agent(dm, spec, agent_cls, eval_compile=True)
        self.patches = patches or set()
        self.compile_seconds: float | None = None
        if self.patches:
            self.name = f"{self.name} +{'+'.join(sorted(self.patches))}"

    def fit(self, first_chunk: int, between: Callable[[float, int], int]) -> None:
        """Train ``spec["total_steps"]`` steps; ``between`` runs after every chunk (see ``_Chunks``)."""
        trainer = L.Trainer(
            precision="bf16-mixed" if "bf16" in self.patches else "32-true",
            max_steps=self.spec["total_steps"],
            accelerator="gpu" if self.spec["device"] == "cuda" else "cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            gradient_clip_val=self.spec["grad_clip"],
            callbacks=[_Chunks(first_chunk, between)],
            default_root_dir=self.root,
        )
        trainer.fit(self.agent, self.dm)

    def evaluate(self, episodes: int, seed: int, target: float) -> dict[str, Any]:
        self.agent.to(self.spec["device"]).eval()  # Lightning hands the module back on the CPU
        policy = DecisionPolicy(self.agent, target_return=target, mode="window")
        ctx = contextlib.nullcontext()
        if self.patches:
            from vs_peers_experiments import patched_eval

            ctx = patched_eval(self.agent, self.patches)
        with torch.inference_mode(), ctx:
            if self.compile_seconds is None:  # compile (one untimed pass) outside the timing
                t0 = time.perf_counter()
                run_episodes(self.spec["env_id"], policy, episodes, num_envs=episodes, seed=seed)
                self.compile_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = run_episodes(self.spec["env_id"], policy, episodes, num_envs=episodes, seed=seed)
            seconds = time.perf_counter() - t0
        return {
            "returns": [r.total_return for r in res],
            "lengths": [r.length for r in res],
            "seconds": seconds,
        }

    def flops_per_step(self, every_position: bool = False) -> float:
        """FLOPs of one training step; ``every_position``: as if the last block computed every
        token (what the peers do), i.e. the full model's count."""
        batch = {k: v.to(self.agent.device) for k, v in next(iter(self.dm.train_dataloader())).items()}
        self.agent.train()
        if every_position:
            from vs_peers_experiments import use_full_last_block

            use_full_last_block(self.agent)
        try:
            with FlopCounterMode(display=False) as counter:
                self.agent._loss(batch)[0].backward()
        finally:
            self.agent.backbone.__dict__.pop("forward_at", None)
        self.agent.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())


# --------------------------------------------------------------------------- d3rlpy (other venv)
class D3rlpy:
    """Client of ``peers/d3rlpy_worker.py`` running under another interpreter."""

    def __init__(self, python: str, spec: dict[str, Any], arrays: dict[str, np.ndarray], tmp: str) -> None:
        path = Path(tmp) / "peer_data.npz"
        np.savez(path, spec=np.array(json.dumps(spec)), **arrays)
        self.log = open(Path(tmp) / "d3rlpy_worker.log", "w+")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [python, str(HERE / "peers" / "d3rlpy_worker.py"), str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=tmp,
        )
        hello = self._read()
        self.name = f"d3rlpy {'Discrete' if spec['discrete'] else ''}DecisionTransformer"
        self.version = hello["version"]

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-3000:]
            raise RuntimeError(f"d3rlpy worker exited (code {self.proc.poll()}); its stderr ends:\n{tail}")
        return json.loads(line)

    def _ask(self, **cmd: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def train(self, steps: int) -> float:
        return float(self._ask(cmd="train", steps=steps)["seconds"])

    def evaluate(self, episodes: int, seed: int, target: float) -> dict[str, Any]:
        return self._ask(cmd="eval", episodes=episodes, seed=seed, target=target)

    def flops_per_step(self) -> float:
        return float(self._ask(cmd="flops")["flops"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        self.log.close()


def find_d3rlpy_python(given: str | None) -> str | None:
    candidates = [given] if given else [sys.executable]
    for python in candidates:
        ok = subprocess.run([python, "-c", "import d3rlpy"], capture_output=True, cwd=tempfile.gettempdir())
        if ok.returncode == 0:
            return python
    return None


D3RLPY_HINT = (
    "d3rlpy skipped: no interpreter here can `import d3rlpy`. It pins gymnasium==1.0.0, so give it its own "
    "virtual environment and pass its python:\n"
    "  python3 -m venv D3RLPY_VENV && D3RLPY_VENV/bin/pip install torch==<this torch version> && "
    "D3RLPY_VENV/bin/pip install d3rlpy\n"
    "  python benchmarks/vs_peers.py --d3rlpy-python D3RLPY_VENV/bin/python"
)


# --------------------------------------------------------------------------- measuring
def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: str = "cpu", n: int = 2048, reps: int = 2) -> float:
    """fp32 ``torch.mm`` throughput on ``device`` (at the current thread count on the CPU), GFLOP/s."""
    if device == "cuda":  # a GPU needs more work per reading to be timed (TF32 stays off, as in training)
        n, reps = 8192, 10
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    dm, spec, arrays = prepare(args)
    skip = set(filter(None, args.skip.split(",")))
    tmp = tempfile.TemporaryDirectory(prefix="vs_peers_")
    patches = set(filter(None, args.ours_patch.split(",")))
    agent_cls = DecisionAgent
    if patches:
        from vs_peers_experiments import patched_agent_class

        agent_cls = patched_agent_class(patches)
    peers: dict[str, Any] = {"ours": Ours(dm, spec, tmp.name, agent_cls, patches)}
    notes: list[str] = []
    if "hf" not in skip:
        try:
            from peers.hf_dt import HFDecisionTransformer

            peers["hf"] = HFDecisionTransformer(arrays, spec)
            peers["hf"].version = metadata.version("transformers")
        except ImportError:
            notes.append("HF skipped: `pip install transformers` into this environment")
    if "d3rlpy" not in skip:
        python = find_d3rlpy_python(args.d3rlpy_python)
        if python is None:
            notes.append(D3RLPY_HINT)
        else:
            peers["d3rlpy"] = D3rlpy(python, spec, arrays, tmp.name)
    peers["ours"].version = metadata.version("lit-seqrl")

    # Training: a warm-up chunk each, then timed chunks taking turns until the budget is spent.
    # Our fit runs in the main thread; after each of its chunks the others train one chunk each.
    times: dict[str, list[float]] = {k: [] for k in peers}
    peak: list[float] = []
    others = [k for k in peers if k != "ours"]
    progress = {"done": 0}
    t_start = time.perf_counter()

    def between(seconds: float, n: int) -> int:
        rates = {"ours": n / seconds}
        for key in others:
            rates[key] = n / peers[key].train(n)
        if progress["done"] > 0 and n == args.chunk:
            for key, rate in rates.items():
                times[key].append(rate)
        peak.append(matmul_gflops(args.device))
        progress["done"] += n
        done = progress["done"]
        line = ", ".join(f"{k} {r:.2f}" for k, r in rates.items())
        print(
            f"[{done}/{args.train_steps} steps] steps/s: {line}; mm {peak[-1]:.0f} GFLOP/s", file=sys.stderr
        )
        return min(args.chunk, args.train_steps - done)

    peers["ours"].fit(min(args.chunk, args.train_steps), between)
    order = list(peers)
    t_train = time.perf_counter() - t_start

    # Evaluation: every peer's own loop, same seeds, conditioned on the expert return.
    evals: dict[str, dict[str, Any]] = {}
    eval_rates: dict[str, list[float]] = {k: [] for k in peers}
    for _ in range(args.eval_repeats):
        for key in order:
            res = peers[key].evaluate(args.episodes, args.seed + 10_000, spec["target"])
            eval_rates[key].append(sum(res["lengths"]) / res["seconds"])
            evals[key] = res
    flops = {k: p.flops_per_step() for k, p in peers.items()}
    flops["ours (full model)"] = peers["ours"].flops_per_step(every_position=True)
    if "d3rlpy" in peers:
        peers["d3rlpy"].close()

    report(args, spec, peers, times, eval_rates, evals, flops, peak, notes, t_train)
    tmp.cleanup()


def report(args, spec, peers, times, eval_rates, evals, flops, peak, notes, t_train) -> None:
    med = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
    emed = {k: statistics.median(v) for k, v in eval_rates.items()}
    peak_med = statistics.median(peak)
    eval_path = {
        "ours": f"run_episodes, {args.episodes} envs batched (window, eval_compile)",
        "hf": "docs get_action loop, batch 1",
        "d3rlpy": "as_stateful_wrapper.predict, batch 1",
    }
    print(
        f"\nvs_peers: {spec['env_id']} on {spec['dataset']}, K={spec['context_len']}, width {spec['d_model']}, "
        f"{spec['n_layers']} layers, {spec['n_heads']} head, batch {spec['batch_size']}, "
        f"{args.train_steps} training steps each, torch {torch.__version__}, {args.threads} threads, "
        f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}"
    )
    header = (
        f"{'peer':<44} {'version':>8} {'train steps/s':>13} {'GFLOP/step':>10} "
        f"{'eval env-steps/s':>16}  {'return @ ' + format(spec['target'], '.0f'):>18}  eval path"
    )
    print(header)
    print("-" * len(header))
    for key, p in peers.items():
        r = np.array(evals[key]["returns"])
        ret = f"{r.mean():.1f} ± {r.std():.1f}"
        print(
            f"{p.name:<44} {p.version:>8} {med[key]:13.2f} {flops[key] / 1e9:10.2f} "
            f"{emed[key]:16.0f}  {ret:>18}  {eval_path[key]}"
        )
    print(
        f"timed chunks: {len(times['ours'])} x {args.chunk} steps per peer (median), training wall {t_train:.0f} s; "
        f"fp32 torch.mm peak {peak_med:.1f} GFLOP/s (median of {len(peak)})"
    )
    if peers["ours"].compile_seconds is not None:
        print(
            f"ours: first (untimed) evaluation pass, compiling included: {peers['ours'].compile_seconds:.1f} s"
        )
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for note in notes:
        print(note)
    ours_r = np.asarray(evals["ours"]["returns"], dtype=float)
    for key in ("hf", "d3rlpy"):
        if key in evals:
            peer_r = np.asarray(evals[key]["returns"], dtype=float)
            diff = ours_r.mean() - peer_r.mean()
            # Standard error of the difference of two means (Welch); "worse" only beyond 2 of them.
            se = float(np.sqrt(ours_r.var(ddof=1) / len(ours_r) + peer_r.var(ddof=1) / len(peer_r)))
            verdict = (
                "WORSE" if diff < -2 * se else ("better" if diff > 2 * se else "not worse (within 2 SE)")
            )
            print(
                f"return at the expert target vs {key}: {ours_r.mean():.1f} vs {peer_r.mean():.1f} "
                f"(difference {diff:+.1f}, SE {se:.1f}) -> {verdict}"
            )
    util = 100 * flops["ours"] * med["ours"] / (peak_med * 1e9)

    def ratio(a: float, key: str, table: dict[str, float]) -> str:
        return f"{a / table[key]:.2f}" if key in table else "nan"

    print(f"RESULT speedup_train_vs_d3rlpy: {ratio(med['ours'], 'd3rlpy', med)} x (goal >= 1.5)")
    print(f"RESULT speedup_train_vs_hf: {ratio(med['ours'], 'hf', med)} x (goal >= 1.2)")
    print(f"RESULT speedup_eval_vs_d3rlpy: {ratio(emed['ours'], 'd3rlpy', emed)} x (goal >= 10)")
    print(f"RESULT flop_utilisation: {util:.1f} % (goal >= 60)")
    model_util = 100 * flops["ours (full model)"] * med["ours"] / (peak_med * 1e9)
    print(
        f"(counting the full model's {flops['ours (full model)'] / 1e9:.2f} GFLOP/step, as the peers "
        f"compute it, instead of the {flops['ours'] / 1e9:.2f} we do: {model_util:.1f} %)"
    )


def main() -> None:
    args = parse_args()
    if args.experiments:
        from vs_peers_experiments import run_experiments

        run_experiments(args)
        return
    run(args)


if __name__ == "__main__":
    main()
