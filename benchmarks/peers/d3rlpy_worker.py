"""d3rlpy's Decision Transformer, driven by ``vs_peers.py`` from another interpreter.

d3rlpy pins a gymnasium that our environment does not have, so it runs in its own virtual
environment; this file must not import lit_seqrl. It reads the episodes and the shared settings
from an .npz, builds ``DecisionTransformerConfig`` (continuous) or
``DiscreteDecisionTransformerConfig`` (discrete) at the benchmark's size, and answers one JSON
command per line on stdin with one JSON line on stdout:

    {"cmd": "train", "steps": N}   -> {"seconds": s, "steps_done": n}   (inside d3rlpy's own ``fit`` loop)
    {"cmd": "eval", "episodes": E, "seed": S, "target": R}
                                   -> {"returns": [...], "lengths": [...], "seconds": s}
                                      (``as_stateful_wrapper`` + ``predict``: one env, batch 1)
    {"cmd": "flops"}               -> {"flops": f}   (one training update under FlopCounterMode)
    {"cmd": "quit"}

Training is one ``fit`` call for the whole budget; its per-step callback pauses it after each
requested chunk, so the benchmark can interleave chunks of every peer. Everything d3rlpy prints
goes to stderr; stdout carries only the replies.

    python d3rlpy_worker.py DATA.npz
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

import numpy as np


def build(spec: dict[str, Any]) -> Any:
    import d3rlpy
    from d3rlpy.models import VectorEncoderFactory
    from d3rlpy.optimizers import AdamWFactory, GPTAdamWFactory, WarmupSchedulerFactory
    from d3rlpy.preprocessing import MinMaxActionScaler, MultiplyRewardScaler, StandardObservationScaler

    obs_scaler = StandardObservationScaler(
        mean=np.asarray(spec["obs_mean"], dtype=np.float32), std=np.asarray(spec["obs_std"], dtype=np.float32)
    )
    common = dict(
        batch_size=spec["batch_size"],
        learning_rate=spec["lr"],
        context_size=spec["context_len"],
        max_timestep=max(1000, spec["max_timestep"] + 1),
        # One linear layer to d_model embeds a state, as in DT (the default is a 2-layer MLP).
        encoder_factory=VectorEncoderFactory(hidden_units=[spec["d_model"]], exclude_last_activation=True),
        num_heads=spec["n_heads"],
        num_layers=spec["n_layers"],
        attn_dropout=spec["dropout"],
        resid_dropout=spec["dropout"],
        embed_dropout=spec["dropout"],
        position_encoding_type=d3rlpy.PositionEncodingType.SIMPLE,
        observation_scaler=obs_scaler,
        reward_scaler=MultiplyRewardScaler(spec["reward_scale"]),
    )
    if spec["discrete"]:
        tokens_per_step = spec["batch_size"] * spec["context_len"]
        return d3rlpy.algos.DiscreteDecisionTransformerConfig(
            **common,
            optim_factory=GPTAdamWFactory(
                weight_decay=spec["weight_decay"], clip_grad_norm=spec["grad_clip"]
            ),
            # Its schedule counts tokens: linear warm-up, then (far past our budget) cosine decay.
            warmup_tokens=spec["warmup_steps"] * tokens_per_step,
            final_tokens=10**12,
        ).create(device=device(spec))
    return d3rlpy.algos.DecisionTransformerConfig(
        **common,
        optim_factory=AdamWFactory(
            weight_decay=spec["weight_decay"],
            clip_grad_norm=spec["grad_clip"],
            lr_scheduler_factory=WarmupSchedulerFactory(warmup_steps=spec["warmup_steps"]),
        ),
        action_scaler=MinMaxActionScaler(
            minimum=np.asarray(spec["action_low"], dtype=np.float32),
            maximum=np.asarray(spec["action_high"], dtype=np.float32),
        ),
    ).create(device=device(spec))


def device(spec: dict[str, Any]) -> str:
    return "cuda:0" if spec.get("device") == "cuda" else "cpu:0"


def make_dataset(data: dict[str, np.ndarray], spec: dict[str, Any]) -> Any:
    import d3rlpy

    discrete = bool(spec["discrete"])
    return d3rlpy.dataset.MDPDataset(
        observations=data["observations"].astype(np.float32),
        actions=data["actions"].reshape(-1, 1) if discrete else data["actions"].astype(np.float32),
        rewards=data["rewards"].astype(np.float32),
        terminals=data["terminals"].astype(np.float32),
        timeouts=data["timeouts"].astype(np.float32),
        action_space=d3rlpy.ActionSpace.DISCRETE if discrete else d3rlpy.ActionSpace.CONTINUOUS,
        action_size=int(spec["act_dim"]),
    )


class Worker:
    def __init__(self, data_path: str, out: TextIO) -> None:
        import torch

        raw = np.load(data_path)
        self.spec = json.loads(str(raw["spec"]))
        import d3rlpy

        torch.set_num_threads(int(self.spec["threads"]))
        d3rlpy.seed(self.spec["seed"])  # python, numpy (its batch sampler) and torch
        self.data = {k: raw[k] for k in raw.files if k != "spec"}
        self.out = out
        self.dataset = make_dataset(self.data, self.spec)
        self.algo = build(self.spec)
        self.total, self.done = int(self.spec["total_steps"]), 0
        self.pending = 0  # steps left in the chunk being trained
        self.t0 = 0.0

    def reply(self, **msg: Any) -> None:
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()

    def _callback(self, algo: Any, epoch: int, total_step: int) -> None:
        self.done, self.pending = total_step, self.pending - 1
        if self.pending > 0:
            return
        if self.spec.get("device") == "cuda":
            import torch

            torch.cuda.synchronize()
        self.reply(seconds=time.perf_counter() - self.t0, steps_done=self.done)
        if self.done < self.total:
            self._next_train()  # block inside fit until the benchmark asks for the next chunk

    def _next_train(self) -> None:
        cmd = json.loads(sys.stdin.readline())
        if cmd["cmd"] != "train":
            raise RuntimeError(f"training is not finished ({self.done}/{self.total}); got {cmd}")
        self.pending = int(cmd["steps"])
        self.t0 = time.perf_counter()

    def _fit(self, first_chunk: int) -> None:
        from d3rlpy.logging import NoopAdapterFactory

        self.pending, self.t0 = first_chunk, time.perf_counter()
        self.algo.fit(
            self.dataset,
            n_steps=self.total,
            n_steps_per_epoch=self.total,
            logger_adapter=NoopAdapterFactory(),
            show_progress=False,
            save_interval=self.total + 1,
            callback=self._callback,
        )

    def evaluate(self, episodes: int, seed: int, target: float) -> None:
        import gymnasium as gym

        wrapper = self.algo.as_stateful_wrapper(target_return=target)
        env = gym.make(self.spec["env_id"])
        returns, lengths = [], []
        t0 = time.perf_counter()
        for ep in range(episodes):
            wrapper.reset()
            obs, _ = env.reset(seed=seed + ep)
            reward, total, done, t = 0.0, 0.0, False, 0
            while not done:
                action = wrapper.predict(np.asarray(obs, dtype=np.float32), reward)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done, t = terminated or truncated, t + 1
            returns.append(total)
            lengths.append(t)
        env.close()
        self.reply(returns=returns, lengths=lengths, seconds=time.perf_counter() - t0)

    def flops(self) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        batch = self.dataset.sample_trajectory_batch(self.spec["batch_size"], length=self.spec["context_len"])
        with FlopCounterMode(display=False) as counter:
            self.algo.update(batch)
        self.reply(flops=float(counter.get_total_flops()))

    def serve(self) -> None:
        import d3rlpy

        self.reply(ready=True, version=d3rlpy.__version__)
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "train":
                if self.done:
                    raise RuntimeError("training resumes only inside fit; send train chunks back to back")
                self._fit(int(cmd["steps"]))
            elif cmd["cmd"] == "eval":
                self.evaluate(int(cmd["episodes"]), int(cmd["seed"]), float(cmd["target"]))
            elif cmd["cmd"] == "flops":
                self.flops()
            elif cmd["cmd"] == "quit":
                return
            else:
                raise RuntimeError(f"unknown command {cmd}")


def main() -> None:
    # Replies go to the real stdout; anything else printed (d3rlpy's logs) to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    Worker(sys.argv[1], out).serve()


if __name__ == "__main__":
    main()
