"""Part 2 of ``vs_peers.py --experiments``: candidate speed-ups of our DT, measured side by side.

Nothing in lit_seqrl is edited: each candidate is an option or a monkeypatch applied in this
process to a fresh agent, so the numbers say what a change to the package would buy. Variants
run in turn, round after round (machine load hits them alike); each row is the median.

* training step (forward + backward + grad-clip + AdamW on batches already in memory):
  one input dropout instead of two, the DT paper's ReLU MLP, unfused AdamW, bf16 autocast,
  ``torch.compile``, thread counts, and the combinations;
* the Lightning loop around it: ``Trainer.fit`` as shipped vs plain loss logging (no MeanMetric);
* window-mode evaluation (``run_episodes`` + ``DecisionPolicy``, 10 envs): bf16 autocast,
  ``torch.compile``, and computing the last block only for the one query the policy reads.
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

from lit_seqrl.agents import DecisionAgent
from lit_seqrl.agents.base import adamw, param_groups
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.backbones.transformer import attention_mask
from lit_seqrl.evaluation.rollout import run_episodes


def make_agent(dm: Any, spec: dict[str, Any], **overrides: Any) -> DecisionAgent:
    torch.manual_seed(spec["seed"])
    kw = dict(
        lr=spec["lr"],
        weight_decay=spec["weight_decay"],
        warmup_steps=spec["warmup_steps"],
        embed_dropout=spec["dropout"],
        eval_episodes=0,
        data_spec=dm.data_spec(),
    )
    kw.update(overrides)
    agent = DecisionAgent(**kw)
    agent.obs_mean.copy_(torch.as_tensor(dm.obs_mean))
    agent.obs_std.copy_(torch.as_tensor(dm.obs_std))
    return agent


def use_relu(agent: DecisionAgent) -> None:
    for block in agent.backbone.blocks:
        block.mlp[1] = nn.ReLU()


class FastDropout(nn.Module):
    """Dropout whose keep-mask comes from 16-bit slices of full-range 64-bit random draws (four
    decisions per draw) instead of ``bernoulli_`` (one draw per element, slow on CPU)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.threshold = round(p * 65536) - 32768  # int16 slices below it are dropped: P = p (to 2^-16)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
        bits.random_(torch.iinfo(torch.int64).min, None)  # full 64-bit range
        keep = bits.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))


def use_fast_dropout(agent: DecisionAgent) -> None:
    """Swap every ``nn.Dropout`` module (not the attention-probability dropout inside SDPA)."""
    for module in list(agent.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Dropout):
                setattr(module, name, FastDropout(child.p))


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
def forward_last_query(agent: DecisionAgent) -> Callable[..., Tensor]:
    """``agent.forward`` for window-mode acting: the last block computes only the query the policy
    reads (the newest state token); keys/values still cover the whole window. Returns (B 1 A)."""
    bb = agent.backbone

    def forward(obs: Tensor, actions: Tensor, rtg: Tensor, timesteps: Tensor, mask: Tensor) -> Tensor:
        tokens, token_mask = agent.embed(obs, actions, rtg, timesteps, mask)  # (B T D)
        T = tokens.shape[1]
        am = attention_mask(token_mask, T)
        x = bb.drop(tokens)
        for block in bb.blocks[:-1]:
            x = block(x, am)
        last = bb.blocks[-1]
        i = T - 2 if agent.hparams.token_layout == "interleaved" else T - 1  # newest state token
        q, k, v = (t.transpose(1, 2) for t in last.attn._heads(last.ln_1(x[:, : i + 1])))  # (B H i+1 dh)
        y = F.scaled_dot_product_attention(
            q[:, :, i:], k, v, attn_mask=None if am is None else am[..., i : i + 1, : i + 1]
        )
        h = x[:, i : i + 1] + last.attn.proj(y.transpose(1, 2).reshape(x.shape[0], 1, -1))  # (B 1 D)
        h = h + last.mlp(last.ln_2(h))
        return agent.predict(bb.ln_f(h))

    return forward


class EvalVariant:
    def __init__(
        self, name: str, agent: DecisionAgent, spec: dict[str, Any], episodes: int, **opts: Any
    ) -> None:
        self.name, self.agent, self.spec, self.episodes = name, agent, spec, episodes
        self.bf16, self.threads = opts.get("bf16", False), opts.get("threads")
        forward = forward_last_query(agent) if opts.get("last_query") else agent.forward
        self.forward = torch.compile(forward) if opts.get("compile") else forward
        self.returns: list[float] = []

    def run(self, default_threads: int) -> float:
        torch.set_num_threads(self.threads or default_threads)
        policy = DecisionPolicy(self.agent, target_return=self.spec["target"], mode="window")
        policy.agent = _Shim(self.agent, self.forward)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        t0 = time.perf_counter()
        with torch.inference_mode(), ctx:
            res = run_episodes(self.spec["env_id"], policy, self.episodes, num_envs=self.episodes, seed=0)
        seconds = (time.perf_counter() - t0) / sum(r.length for r in res)
        torch.set_num_threads(default_threads)
        self.returns = [r.total_return for r in res]
        return seconds


class _Shim:
    """The agent as DecisionPolicy sees it, with ``__call__`` swapped for another forward."""

    def __init__(self, agent: DecisionAgent, forward: Callable[..., Tensor]) -> None:
        self._agent, self._forward = agent, forward

    def __call__(self, *args: Tensor) -> Tensor:
        return self._forward(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._agent, name)


# --------------------------------------------------------------------------- patches for the full run
PATCHES = {
    "single_input_dropout": "embed_dropout=0: the backbone's input dropout alone, as in DT",
    "relu": "ReLU MLP (the DT paper's GPT-2 activation)",
    "fast_dropout": "dropout masks from 64-bit random draws, 4 per draw (not SDPA's attention dropout)",
    "bf16": "bf16 autocast in training (Lightning precision='bf16-mixed') and evaluation",
    "last_query_eval": "window-mode acting computes the last block for the newest state token only",
}


def patched_agent_class(patches: set[str]) -> type[DecisionAgent]:
    """A DecisionAgent subclass with the chosen ``PATCHES`` applied (measurement only)."""
    unknown = patches - PATCHES.keys()
    if unknown:
        raise ValueError(f"unknown patches {sorted(unknown)}; choose from {sorted(PATCHES)}")

    class Patched(DecisionAgent):
        def __init__(self, **kwargs: Any) -> None:
            if "single_input_dropout" in patches:
                kwargs["embed_dropout"] = 0.0
            super().__init__(**kwargs)

        def _build(self, spec: dict[str, Any]) -> None:
            super()._build(spec)
            if "relu" in patches:
                use_relu(self)
            if "fast_dropout" in patches:
                use_fast_dropout(self)

    return Patched


def patched_eval(agent: DecisionAgent, patches: set[str]) -> tuple[Any, Any]:
    """(object DecisionPolicy should call as the agent, context to act in) for ``patches``."""
    forward = forward_last_query(agent) if "last_query_eval" in patches else agent.forward
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in patches else contextlib.nullcontext()
    return _Shim(agent, forward), ctx


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
    variants = [
        TrainVariant("baseline (as shipped)", make_agent(dm, spec)),
        TrainVariant("embed_dropout=0 (input dropout once, as DT)", make_agent(dm, spec, embed_dropout=0.0)),
        TrainVariant("ReLU MLP (DT paper's GPT-2 activation)", _relu(make_agent(dm, spec))),
        TrainVariant("unfused AdamW (the previous default)", make_agent(dm, spec), fused=False),
        TrainVariant("fast dropout masks (4 per 64-bit draw)", _fast(make_agent(dm, spec))),
        TrainVariant(f"threads={other}", make_agent(dm, spec), threads=other),
        TrainVariant("torch.compile(agent)", make_agent(dm, spec), compile=True),
        TrainVariant("bf16 autocast", make_agent(dm, spec), bf16=True),
        TrainVariant("fp32 combo: embed_dropout=0 + ReLU + fast dropout", _combo(dm, spec)),
        TrainVariant("fp32 combo + bf16 autocast", _combo(dm, spec), bf16=True),
    ]
    notes = {}
    for v in variants:  # warm-up (compiles here; the time is reported)
        t0 = time.perf_counter()
        v.run(batches[:2], args.threads)
        notes[v.name] = f"first 2 steps {time.perf_counter() - t0:.1f} s" if "compile" in v.name else ""
    med = interleave({v.name: (lambda v=v: v.run(batches, args.threads)) for v in variants}, rounds)
    flops = _flops(variants[0].agent, batches[0])
    notes["baseline (as shipped)"] = (
        f"{flops / 1e9:.2f} GFLOP/step -> {flops / med['baseline (as shipped)'] / 1e9:.1f} GFLOP/s"
    )
    print_table(
        f"training step, batch {spec['batch_size']}, {args.threads} threads",
        "ms/step",
        med,
        "baseline (as shipped)",
        notes,
    )


def lightning_loop_variants(args, dm, spec, batches, rounds) -> None:
    from vs_peers import Ours

    class PlainLog(DecisionAgent):
        def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
            loss, _ = self._loss(batch)
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
            return loss

    with tempfile.TemporaryDirectory() as root:
        n_chunks = rounds + 1
        loop_spec = {**spec, "total_steps": args.chunk * n_chunks}
        shipped = Ours(dm, loop_spec, root)
        plain = Ours(dm, loop_spec, root, agent_cls=PlainLog)
        bare = TrainVariant("bare step", make_agent(dm, spec))
        for runner in (shipped, plain):
            runner.train(args.chunk)  # warm-up chunk
        med = interleave(
            {
                "Trainer.fit, as shipped (MeanMetric logged every step)": lambda: (
                    shipped.train(args.chunk) / args.chunk
                ),
                "Trainer.fit, loss logged as a plain tensor": lambda: plain.train(args.chunk) / args.chunk,
                "bare step (no Lightning)": lambda: bare.run(batches, args.threads),
            },
            rounds,
        )
    print_table(
        "Lightning loop (data loading included for the fit rows)",
        "ms/step",
        med,
        "Trainer.fit, as shipped (MeanMetric logged every step)",
        {},
    )


def eval_variants(args, dm, spec, rounds, other) -> None:
    agent = make_agent(dm, spec).eval()
    episodes = args.episodes
    ev = [
        EvalVariant("baseline fp32 (as shipped)", agent, spec, episodes),
        EvalVariant(f"threads={other}", agent, spec, episodes, threads=other),
        EvalVariant("last block: newest state query only", agent, spec, episodes, last_query=True),
        EvalVariant("bf16 autocast", agent, spec, episodes, bf16=True),
        EvalVariant("torch.compile(forward)", agent, spec, episodes, compile=True),
        EvalVariant("last query only + bf16 autocast", agent, spec, episodes, last_query=True, bf16=True),
        EvalVariant("last query only + torch.compile", agent, spec, episodes, last_query=True, compile=True),
    ]
    for v in ev:
        v.run(args.threads)
    med = interleave({v.name: (lambda v=v: v.run(args.threads)) for v in ev}, max(2, rounds - 2))
    base = np.array(ev[0].returns)
    notes = {
        v.name: f"max |return diff| vs baseline {np.abs(np.array(v.returns) - base).max():.2g}" for v in ev
    }
    print_table(
        f"window-mode evaluation ({spec['env_id']}), {episodes} envs stepped together",
        "us/env-step",
        med,
        "baseline fp32 (as shipped)",
        notes,
        scale=1e6,
    )
    for name, sec in med.items():
        print(f"  {name}: {1 / sec:.0f} env-steps/s")


def _combo(dm: Any, spec: dict[str, Any]) -> DecisionAgent:
    agent = make_agent(dm, spec, embed_dropout=0.0)
    use_relu(agent)
    use_fast_dropout(agent)
    return agent


def _fast(agent: DecisionAgent) -> DecisionAgent:
    use_fast_dropout(agent)
    return agent


def _relu(agent: DecisionAgent) -> DecisionAgent:
    use_relu(agent)
    return agent


def _flops(agent: DecisionAgent, batch: dict[str, Tensor]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss_of(agent, agent, batch).backward()
    agent.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())
