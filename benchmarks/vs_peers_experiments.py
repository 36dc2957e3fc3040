"""Part 2 of ``vs_peers.py --experiments``: what each speed-up of our DT buys, side by side.

Nothing in lit_seqrl is edited: each variant is an option or a monkeypatch applied in this
process to a fresh agent (undoing a shipped change, or trying one that is not shipped).
Variants run in turn, round after round (machine load hits them alike); each row is the median.

* training step (forward + backward + grad-clip + AdamW on batches already in memory): GELU,
  the last block on every position, unfused AdamW, all of them together (our step before
  these changes), thread counts, ``torch.compile`` and bf16 autocast;
* the Lightning loop around it: ``Trainer.fit`` (data loading, logging, clipping) vs the bare step;
* window-mode evaluation (``run_episodes`` + ``DecisionPolicy``, 10 envs): the last block on
  every position, thread counts, bf16 autocast and ``torch.compile``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vs_peers import backbone_spec, make_agent

from lit_seqrl.agents import DecisionAgent
from lit_seqrl.agents.base import adamw, param_groups
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.evaluation.rollout import run_episodes


def use_full_last_block(agent: DecisionAgent) -> DecisionAgent:
    """Undo ``forward_at``: the last block computes every position, then the agent picks."""
    bb = agent.backbone
    full = type(bb).forward_at  # with index None it computes every position

    def forward_at(x: Tensor, mask: Tensor | None = None, index: slice | Tensor | None = None) -> Tensor:
        y = full(bb, x, mask, None)
        return y if index is None else y[:, index]

    bb.forward_at = forward_at  # type: ignore[method-assign]
    return agent


def undo_this_round(agent: DecisionAgent) -> DecisionAgent:
    """Two input dropouts (the agent's and the backbone's), full last block.
    (GELU, the other part of our previous step, is chosen when the agent is built.)"""
    p = agent.hparams.embed_dropout
    agent.embed_drop = nn.Sequential(nn.Dropout(p), nn.Dropout(p))
    return use_full_last_block(agent)


def previous(dm: Any, spec: dict[str, Any]) -> DecisionAgent:
    """Our step before this round: GELU, two input dropouts, PyTorch's masks, full last block."""
    return undo_this_round(make_agent(dm, spec, backbone=backbone_spec(spec, activation="gelu")))


def loss_of(agent: DecisionAgent, forward: Callable[..., Tensor], batch: dict[str, Tensor]) -> Tensor:
    """The agent's own continuous/discrete loss, with a replaceable forward (e.g. compiled)."""
    pred = forward(
        batch["observations"], batch["actions"], batch["returns_to_go"], batch["timesteps"], batch["mask"]
    )
    mask = batch["mask"]
    if agent.spec["discrete"]:
        return F.cross_entropy(pred[mask], batch["actions"][mask].long())
    target = agent.normalize_actions(batch["actions"]) if agent.squash else batch["actions"]
    return F.mse_loss(pred[mask], target[mask])


class TrainVariant:
    def __init__(
        self,
        name: str,
        agent: DecisionAgent,
        *,
        fused: bool = True,
        bf16: bool = False,
        compile: bool = False,
        threads: int | None = None,
    ) -> None:
        self.name, self.agent, self.threads = name, agent, threads
        agent.train()
        hp = agent.hparams
        groups = param_groups(agent, hp.weight_decay, hp.lr)
        # As shipped (fused where possible) unless the variant asks for the unfused optimizer.
        self.opt = (
            adamw(groups, lr=hp.lr, betas=tuple(hp.betas))
            if fused
            else torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        )
        self.bf16 = bf16
        self.forward = torch.compile(agent) if compile else agent
        self.compile_seconds = 0.0

    def step(self, batch: dict[str, Tensor]) -> None:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            loss = loss_of(self.agent, self.forward, batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.agent.parameters(), 0.25)
        self.opt.step()

    def run(self, batches: list[dict[str, Tensor]], default_threads: int) -> float:
        torch.set_num_threads(self.threads or default_threads)
        t0 = time.perf_counter()
        for b in batches:
            self.step(b)
        seconds = (time.perf_counter() - t0) / len(batches)
        torch.set_num_threads(default_threads)
        return seconds


def interleave(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median seconds of each callable, run in rotating order ``rounds`` times."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for _ in range(rounds):
        for key in order:
            times[key].append(runs[key]())
        order = order[1:] + order[:1]
    return {k: statistics.median(v) for k, v in times.items()}


def print_table(
    title: str, unit: str, med: dict[str, float], baseline: str, extra: dict[str, str], scale: float = 1e3
) -> None:
    print(f"\n{title}")
    print(f"{'variant':<58} {unit:>11} {'speed-up':>9}  notes")
    for name, sec in med.items():
        print(f"{name:<58} {scale * sec:11.2f} {med[baseline] / sec:8.2f}x  {extra.get(name, '')}")


# --------------------------------------------------------------------------- evaluation variants
class EvalVariant:
    def __init__(
        self, name: str, agent: DecisionAgent, spec: dict[str, Any], episodes: int, **opts: Any
    ) -> None:
        self.name, self.spec, self.episodes = name, spec, episodes
        self.bf16, self.threads = opts.get("bf16", False), opts.get("threads")
        self.policy = DecisionPolicy(agent, spec["target"], mode="window", compile=opts.get("compile", False))
        self.returns: list[float] = []

    def run(self, default_threads: int) -> float:
        torch.set_num_threads(self.threads or default_threads)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        t0 = time.perf_counter()
        with torch.inference_mode(), ctx:
            res = run_episodes(
                self.spec["env_id"], self.policy, self.episodes, num_envs=self.episodes, seed=0
            )
        seconds = (time.perf_counter() - t0) / sum(r.length for r in res)
        torch.set_num_threads(default_threads)
        self.returns = [r.total_return for r in res]
        return seconds


# --------------------------------------------------------------------------- patches for the full run
PATCHES = {
    "bf16": "bf16 autocast in training (Lightning precision='bf16-mixed') and evaluation",
    "previous": "our agent before this round (GELU, two input dropouts, full last block)",
    "compile": "torch.compile of the agent's forward in training (acting: ours uses eval_compile anyway)",
}


def patched_agent_class(patches: set[str]) -> type[DecisionAgent]:
    """A DecisionAgent subclass with the chosen ``PATCHES`` applied (measurement only)."""
    unknown = patches - PATCHES.keys()
    if unknown:
        raise ValueError(f"unknown patches {sorted(unknown)}; choose from {sorted(PATCHES)}")

    class Patched(DecisionAgent):
        def __init__(self, **kwargs: Any) -> None:
            if "previous" in patches:
                kwargs["backbone"] = {**kwargs["backbone"], "activation": "gelu"}
            super().__init__(**kwargs)

        def _build(self, spec: dict[str, Any]) -> None:
            super()._build(spec)
            if "previous" in patches:
                undo_this_round(self)
            if "compile" in patches:  # one graph per mode: the agent's forward has no graph break
                self.forward = torch.compile(self.forward)

    return Patched


def patched_eval(agent: DecisionAgent, patches: set[str]) -> contextlib.AbstractContextManager:
    """The context to act in for ``patches``."""
    if "bf16" in patches:
        return torch.autocast(agent.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- driver
def run_experiments(args: argparse.Namespace) -> None:
    from vs_peers import prepare  # the benchmark's own data preparation

    torch.set_num_threads(args.threads)
    args.train_steps = max(args.train_steps, 200)
    dm, spec, _ = prepare(args)
    loader = iter(dm.train_dataloader())
    batches = [next(loader) for _ in range(4 if args.quick else 8)]
    rounds = 3 if args.quick else 5
    other = 1 if args.threads > 1 else 2
    sections = set(args.experiments.split(","))
    if "train" in sections:
        train_step_variants(args, dm, spec, batches, rounds, other)
    if "loop" in sections:
        lightning_loop_variants(args, dm, spec, batches, rounds)
    if "eval" in sections:
        eval_variants(args, dm, spec, rounds, other)


def train_step_variants(args, dm, spec, batches, rounds, other) -> None:
    gelu = backbone_spec(spec, activation="gelu")
    variants = [
        TrainVariant("as shipped", make_agent(dm, spec)),
        TrainVariant("GELU MLP instead of ReLU (our default)", make_agent(dm, spec, backbone=gelu)),
        TrainVariant("last block on every position", use_full_last_block(make_agent(dm, spec))),
        TrainVariant("unfused AdamW", make_agent(dm, spec), fused=False),
        TrainVariant("previous: all of the above + two input dropouts", previous(dm, spec), fused=False),
        TrainVariant(f"threads={other}", make_agent(dm, spec), threads=other),
        TrainVariant("torch.compile(agent)", make_agent(dm, spec), compile=True),
        TrainVariant("bf16 autocast", make_agent(dm, spec), bf16=True),
    ]
    notes = {}
    for v in variants:  # warm-up (compiles here; the time is reported)
        t0 = time.perf_counter()
        v.run(batches[:2], args.threads)
        notes[v.name] = f"first 2 steps {time.perf_counter() - t0:.1f} s" if "compile" in v.name else ""
    med = interleave({v.name: (lambda v=v: v.run(batches, args.threads)) for v in variants}, rounds)
    for v in variants[:2]:
        flops = _flops(v.agent, batches[0])
        notes[v.name] = f"{flops / 1e9:.2f} GFLOP/step -> {flops / med[v.name] / 1e9:.1f} GFLOP/s"
    print_table(
        f"training step, batch {spec['batch_size']}, {args.threads} threads",
        "ms/step",
        med,
        "as shipped",
        notes,
    )


def lightning_loop_variants(args, dm, spec, batches, rounds) -> None:
    from vs_peers import Ours

    def fit_seconds_per_step(agent_cls: type[DecisionAgent]) -> float:
        """A short ``Trainer.fit`` in the main thread; median chunk time after a warm-up chunk."""
        per_step: list[float] = []

        def between(seconds: float, n: int) -> int:
            per_step.append(seconds / n)
            return args.chunk

        with tempfile.TemporaryDirectory() as root:
            Ours(dm, {**spec, "total_steps": 4 * args.chunk}, root, agent_cls=agent_cls).fit(
                args.chunk, between
            )
        return statistics.median(per_step[1:])

    bare = TrainVariant("bare step", make_agent(dm, spec))
    med = interleave(
        {
            "Trainer.fit, as shipped": lambda: fit_seconds_per_step(DecisionAgent),
            "bare step (no Lightning, batches in memory)": lambda: bare.run(batches, args.threads),
        },
        max(2, rounds - 2),
    )
    print_table(
        "Lightning loop (data loading included for the fit rows)",
        "ms/step",
        med,
        "Trainer.fit, as shipped",
        {},
    )


def eval_variants(args, dm, spec, rounds, other) -> None:
    agent = make_agent(dm, spec).eval()
    full = use_full_last_block(make_agent(dm, spec)).eval()
    episodes = args.episodes
    ev = [
        EvalVariant("as shipped (last block: newest state query only)", agent, spec, episodes),
        EvalVariant("last block on every position", full, spec, episodes),
        EvalVariant(f"threads={other}", agent, spec, episodes, threads=other),
        EvalVariant("bf16 autocast", agent, spec, episodes, bf16=True),
        EvalVariant("eval_compile (torch.compile of forward)", agent, spec, episodes, compile=True),
    ]
    for v in ev:
        v.run(args.threads)
    med = interleave({v.name: (lambda v=v: v.run(args.threads)) for v in ev}, max(2, rounds - 2))
    base = np.array(ev[0].returns)
    notes = {
        v.name: f"max |return diff| vs as shipped {np.abs(np.array(v.returns) - base).max():.2g}" for v in ev
    }
    print_table(
        f"window-mode evaluation ({spec['env_id']}), {episodes} envs stepped together",
        "us/env-step",
        med,
        ev[0].name,
        notes,
        scale=1e6,
    )
    for name, sec in med.items():
        print(f"  {name}: {1 / sec:.0f} env-steps/s")


def _flops(agent: DecisionAgent, batch: dict[str, Tensor]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss_of(agent, agent, batch).backward()
    agent.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())
