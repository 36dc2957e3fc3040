"""The DTQN paper's comparison, scaled to a CPU: DQN vs DRQN vs DTQN on four POMDPs.

Every method gets the same environment-step budget per task and seed, and is scored along the way
by its greedy success rate over fixed evaluation seeds, so each run gives a learning curve
(success rate vs environment steps). DQN sees the current observation only; DRQN an LSTM over
the history; DTQN the paper's transformer block (``dtqn_transformer``: post-LN, ReLU'd sub-layer
outputs, learned positions starting at zero), smaller than the paper's (see ``methods``).

Each (task, method, seed) run writes one JSON file into ``--out`` and is skipped when that file
exists, so an interrupted comparison resumes with the same command (delete the ``*.lock`` files
of runs that were cut short first). Workers may share ``--out``: each claims a run with a lock
file. ``--summary`` only reads the files: it prints the table and, with ``--plot``, draws the curves.

    python benchmarks/pomdp_memory.py --quick                 # 1 seed, small budgets
    python benchmarks/pomdp_memory.py --out results/pomdp     # 3 seeds, the budgets below
    python benchmarks/pomdp_memory.py --out results/pomdp --summary --plot curves.png

Prints a table of final success rates (mean ± std over seeds), then as its last line
``RESULT pomdp_dtqn_success_heavenhell: <x> (goal >= 0.9)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_seqrl.agents.dtqn import DTQNAgent

# Per task: the agent's environment and discount, the env-step budget (full / quick) and the
# length of the greedy evaluations along the way.
TASKS: dict[str, dict[str, Any]] = {
    "heavenhell": {"agent": {"env_id": "lit_seqrl/HeavenHell-v0"}, "steps": 6_000, "quick_steps": 2_000},
    "carflag": {"agent": {"env_id": "lit_seqrl/CarFlag-v0"}, "steps": 6_000, "quick_steps": 2_000},
    "memorycards": {"agent": {"env_id": "lit_seqrl/MemoryCards-v0"}, "steps": 6_000, "quick_steps": 2_000},
    "hallway": {"agent": {"env_id": "lit_seqrl/Hallway-v0"}, "steps": 6_000, "quick_steps": 2_000},
}

# Shared by every method: the paper's context, batch, discount, loss and Double DQN; a higher
# learning rate, a faster target sync and epsilon schedule, and 4 environment steps per update,
# for budgets ~300x smaller than its 2M steps (what a shared 2-core CPU runs in about an hour).
COMMON: dict[str, Any] = {
    "context_len": 50,
    "batch_size": 32,
    "gamma": 0.99,
    "lr": 1e-3,
    "env_steps_per_update": 4,
    "target_update_interval": 250,
    "eps_start": 1.0,
    "eps_end": 0.1,
}


def methods(d_model: int) -> dict[str, dict[str, Any]]:
    """DQN, DRQN and DTQN at width ``d_model`` (the paper: 128; DTQN 2 layers, 8 heads)."""
    return {
        "DQN": {"history": "none", "d_model": d_model},
        # DRQN acts as recurrent agents do, carrying its LSTM state (capped at the context).
        "DRQN": {
            "backbone": {"name": "lstm", "d_model": d_model},
            "pos_embedding": False,
            "act_mode": "recurrent",
        },
        "DTQN": {
            "backbone": {"name": "dtqn_transformer", "d_model": d_model, "n_layers": 1, "n_heads": 4},
        },
    }


class CurveRecorder(L.Callback):
    """Greedy evaluation every ``every`` environment steps: appends ``(env_steps, success, return)``."""

    def __init__(self, every: int, episodes: int, seed: int) -> None:
        self.every, self.episodes, self.seed = every, episodes, seed
        self.next_at = 0
        self.curve: list[dict[str, float]] = []

    def record(self, agent: DTQNAgent) -> None:
        steps = agent._collector.env_steps if agent._collector is not None else 0
        row = agent.evaluate_policy(episodes=self.episodes, num_envs=10, seed=self.seed)["results"][0]
        self.curve.append(
            {"env_steps": steps, "success_rate": row["success_rate"], "return_mean": row["return_mean"]}
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        steps = pl_module._collector.env_steps
        if steps >= self.next_at:
            self.record(pl_module)
            self.next_at = steps + self.every


def run_one(
    task: dict[str, Any], method: dict[str, Any], budget: int, seed: int, args: Any
) -> dict[str, Any]:
    """Train one agent for ``budget`` environment steps; its learning curve and final score."""
    hp = dict(COMMON)
    per_update = hp["env_steps_per_update"]
    learning_starts = budget // 8
    updates = (budget - learning_starts) // per_update
    hp.update(
        learning_starts=learning_starts,
        eps_decay_steps=updates * 2 // 5,  # epsilon reaches its floor after 40 % of the updates
        buffer_size=budget,
        batches_per_epoch=updates,
        seed=seed,
    )
    L.seed_everything(seed, verbose=False)
    agent = DTQNAgent(**task["agent"], **method, **hp)
    recorder = CurveRecorder(budget // args.points, args.eval_episodes, seed=100_000)
    trainer = L.Trainer(
        max_steps=updates,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(agent)
    final = agent.evaluate_policy(episodes=args.final_episodes, num_envs=10, seed=200_000)["results"][0]
    return {
        "agent": {k: v for k, v in agent.hparams.items() if k != "env_kwargs"},
        "budget_env_steps": budget,
        "env_steps": agent._collector.env_steps if agent._collector is not None else 0,
        "gradient_steps": trainer.global_step,
        "curve": recorder.curve,
        "final": {"episodes": args.final_episodes, **final},
        "wall_s": time.time() - t0,
    }


def claim(lock: Path) -> bool:
    """Atomically take a run (several workers may share one output folder); False if taken."""
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.pstdev(values):.2f}"


def load_runs(out: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted(out.glob("*.json")):
        run = json.loads(path.read_text())
        runs.setdefault((run["task"], run["method"]), []).append(run)
    return runs


def markdown(runs: dict, tasks: list[str], names: list[str]) -> str:
    """The final success rates as a Markdown table: mean ± std (number of seeds)."""
    lines = ["| task | env steps | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for task in tasks:
        budgets = sorted({r["budget_env_steps"] for m in names for r in runs.get((task, m), [])})
        cells = []
        for m in names:
            done = runs.get((task, m), [])
            cells.append(f"{fmt([r['final']['success_rate'] for r in done])} ({len(done)})" if done else "-")
        lines.append(f"| {task} | {'/'.join(map(str, budgets)) or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(out: Path, tasks: list[str], names: list[str], plot: str | None, md: bool = False) -> None:
    runs = load_runs(out)
    if md:
        print(markdown(runs, tasks, names))
    print(f"greedy success rate at the end of the budget (runs in {out})")
    header = f"{'task':<12} {'env steps':>9}  " + "  ".join(f"{m:>15}" for m in names)
    print(header)
    print("-" * len(header))
    for task in tasks:
        budgets = {r["budget_env_steps"] for m in names for r in runs.get((task, m), [])}
        cells = []
        for m in names:
            done = runs.get((task, m), [])
            finals = [r["final"]["success_rate"] for r in done]
            cells.append(f"{fmt(finals) + f' ({len(done)})':>15}")
        print(f"{task:<12} {'/'.join(map(str, sorted(budgets))) or '-':>9}  " + "  ".join(cells))
    if plot:
        plot_curves(runs, tasks, names, plot)
    hh = [r["final"]["success_rate"] for r in runs.get(("heavenhell", "DTQN"), [])]
    value = f"{statistics.mean(hh):.2f}" if hh else "nan"
    print(f"RESULT pomdp_dtqn_success_heavenhell: {value} (goal >= 0.9)")


def plot_curves(runs: dict, tasks: list[str], names: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
    colors = {m: f"C{i}" for i, m in enumerate(names)}  # one colour per method in every panel
    for ax, task in zip(axes[0], tasks):
        for m in names:
            done = runs.get((task, m), [])
            if not done:
                continue
            n = min(len(r["curve"]) for r in done)
            x = np.array([r["curve"][i]["env_steps"] for i in range(n) for r in done[:1]])
            y = np.array([[r["curve"][i]["success_rate"] for i in range(n)] for r in done])
            mean, std = y.mean(0), y.std(0)
            ax.plot(x, mean, color=colors[m], label=f"{m} ({len(done)} seeds)")
            ax.fill_between(x, mean - std, mean + std, color=colors[m], alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("greedy success rate")
    for ax in axes[0]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed and a smaller step budget")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 3, quick 1)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=None, help="subset of DQN DRQN DTQN")
    parser.add_argument("--d_model", type=int, default=32)
    parser.add_argument("--points", type=int, default=6, help="evaluations along each run")
    parser.add_argument("--eval_episodes", type=int, default=10, help="episodes per evaluation on the way")
    parser.add_argument("--final_episodes", type=int, default=30, help="episodes of the final evaluation")
    parser.add_argument("--out", type=Path, default=None, help="one JSON per run; existing runs are skipped")
    parser.add_argument("--summary", action="store_true", help="only read --out and print the table")
    parser.add_argument("--plot", default=None, help="also draw the learning curves to this PNG")
    parser.add_argument("--markdown", action="store_true", help="with --summary: also a Markdown table")
    parser.add_argument("--worker", default="0/1", help="i/n: run only every n-th missing run, from i")
    parser.add_argument("--reverse", action="store_true", help="take the runs from the last one backwards")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small networks: extra threads only add contention
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-run banners

    table = methods(args.d_model)
    names = [m for m in table if not args.methods or m in args.methods]
    out = args.out or Path(f"pomdp_memory_{'quick' if args.quick else 'full'}")
    if args.summary:
        summary(out, args.tasks, names, args.plot, args.markdown)
        return
    out.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds or (1 if args.quick else 3)
    worker, n_workers = (int(x) for x in args.worker.split("/"))
    jobs = [(t, m, s) for s in range(seeds) for t in args.tasks for m in names]
    order = list(enumerate(jobs))
    for k, (task_name, method_name, seed) in reversed(order) if args.reverse else order:
        path = out / f"{task_name}_{method_name}_seed{seed}.json"
        if path.exists() or k % n_workers != worker or not claim(path.with_suffix(".lock")):
            continue
        task = TASKS[task_name]
        budget = task["quick_steps"] if args.quick else task["steps"]
        result = run_one(task, table[method_name], budget, seed, args)
        result.update(task=task_name, method=method_name, seed=seed)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)  # a run is either complete on disk or absent
        path.with_suffix(".lock").unlink(missing_ok=True)
        print(
            f"# {task_name:<12} {method_name:<5} seed {seed}: success {result['final']['success_rate']:.2f}"
            f" ({result['wall_s']:.0f} s, {result['env_steps']} env steps)",
            flush=True,
        )
    print()
    summary(out, args.tasks, names, args.plot)


if __name__ == "__main__":
    main()
