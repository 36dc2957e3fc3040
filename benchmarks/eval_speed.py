"""Evaluation speed: the original DT loop (one env at a time, batch 1) vs our vectorised rollout.

Both evaluate the same agent on 10 Pendulum episodes with the same seeds; (a) steps one env at a
time and re-encodes its growing history (cut to the last K steps) with batch 1, as the original
Decision Transformer evaluation does; (b) is ``run_episodes`` + ``DecisionPolicy`` in window mode,
one batched forward for all envs per step. The first actions of both are compared.

    python benchmarks/eval_speed.py [--ckpt_path last.ckpt] [--episodes 10]

Without a checkpoint, a default-config DT is trained for ``--train_steps`` steps first.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import lightning as L
import numpy as np
import torch

from lit_seqrl.agents import DecisionAgent, load_agent
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.data import OfflineTrajectoryDataModule
from lit_seqrl.evaluation.rollout import run_episodes


def train_default(steps: int) -> DecisionAgent:
    dm = OfflineTrajectoryDataModule("lit_seqrl/pendulum/mixed-v0", reward_scale=0.01)
    agent = DecisionAgent(lr=3e-4, warmup_steps=100, eval_episodes=0, data_spec=dm.data_spec())
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, gradient_clip_val=0.25)  # fmt: skip
    trainer.fit(agent, dm)
    return agent.eval()


@torch.inference_mode()
def original_loop(
    agent: DecisionAgent, episodes: int, seed: int, target: float
) -> tuple[list[float], list[np.ndarray]]:
    """One env at a time, full history tensors grown with torch.cat, last K steps, batch 1."""
    spec, K = agent.spec, agent.spec["context_len"]
    scale = spec["reward_scale"]
    returns, first_actions = [], []
    env = gym.make(spec["env_id"])
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        states = torch.tensor(obs, dtype=torch.float32).reshape(1, -1)
        actions = torch.zeros(0, spec["act_dim"])
        rtg = torch.tensor([[target * scale]])
        timesteps = torch.zeros(1, dtype=torch.long)
        total, done, t = 0.0, False, 0
        while not done:
            actions = torch.cat([actions, torch.zeros(1, spec["act_dim"])])
            n = min(K, states.shape[0])
            pad = K - n

            def window(x: torch.Tensor, n: int = n, pad: int = pad) -> torch.Tensor:
                x = x[-n:]
                return torch.cat([torch.zeros(pad, *x.shape[1:], dtype=x.dtype), x])[None]

            mask = torch.cat([torch.zeros(pad, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])[None]
            out = agent(window(states), window(actions), window(rtg), window(timesteps), mask)[0, -1]
            action = agent.denormalize_actions(out)
            actions[-1] = action
            if ep == 0 and t < 20:
                first_actions.append(action.numpy().copy())
            obs, r, term, trunc, _ = env.step(action.numpy())
            total += float(r)
            done = term or trunc
            t += 1
            states = torch.cat([states, torch.tensor(obs, dtype=torch.float32).reshape(1, -1)])
            rtg = torch.cat([rtg, rtg[-1:] - r * scale])
            timesteps = torch.cat([timesteps, torch.tensor([t])])
        returns.append(total)
    return returns, first_actions


class RecordingPolicy(DecisionPolicy):
    def act(self, obs: np.ndarray) -> np.ndarray:
        a = super().act(obs)
        if len(self.first) < 20:
            self.first.append(a[0].copy())
        return a


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt_path", default=None)
    parser.add_argument("--train_steps", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=-140.0)
    args = parser.parse_args()
    agent = load_agent(args.ckpt_path) if args.ckpt_path else train_default(args.train_steps)

    t0 = time.perf_counter()
    base_returns, base_first = original_loop(agent, args.episodes, args.seed, args.target)
    t_base = time.perf_counter() - t0

    policy = RecordingPolicy(agent, args.target, mode="window")
    policy.first = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        ours = run_episodes(
            agent.spec["env_id"], policy, args.episodes, num_envs=args.episodes, seed=args.seed
        )
    t_ours = time.perf_counter() - t0
    our_returns = [r.total_return for r in ours]

    diff = float(np.max(np.abs(np.array(base_first) - np.array(policy.first))))
    steps = sum(r.length for r in ours)
    print(f"{'path':<34} {'seconds':>8} {'env-steps/s':>12} {'return mean':>12}")
    print(
        f"{'(a) one env at a time, batch 1':<34} {t_base:8.2f} {steps / t_base:12.0f} {np.mean(base_returns):12.1f}"
    )
    print(
        f"{'(b) vectorised, batched window':<34} {t_ours:8.2f} {steps / t_ours:12.0f} {np.mean(our_returns):12.1f}"
    )
    print(f"max |action difference| over the first 20 steps of episode 0: {diff:.2e}")
    print(f"per-episode returns equal within 1e-3: {np.allclose(base_returns, our_returns, atol=1e-3)}")
    print(f"RESULT eval_speedup: {t_base / t_ours:.1f} x (goal >= 8)")


if __name__ == "__main__":
    main()
