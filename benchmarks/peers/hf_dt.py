"""Hugging Face transformers' ``DecisionTransformerModel``, trained and evaluated as its docs do.

The model is only a model: the docs pair it with a batch sampler (episodes drawn in proportion to
their length, windows of K steps cut at the episode end and left-padded, normalised states,
scaled returns-to-go, ``attention_mask`` 1 on real steps) and a training step that masks the
action MSE with that mask; evaluation grows history tensors with ``torch.cat`` and calls the model
on the last K steps with batch 1. That is what this file does, with the benchmark's settings.
Continuous actions use the model's tanh head on actions rescaled to [-1, 1]; discrete ones are fed
as one-hot vectors and trained with cross-entropy on the (tanh-free) action head.

Independent of lit_seqrl: it sees numpy arrays and a plain ``spec`` dict (see ``vs_peers.py``).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

Batch = dict[str, torch.Tensor]


class HFDecisionTransformer:
    """One HF DT trained step by step on the benchmark's episodes.

    Args:
        data: concatenated episodes ``observations (N obs)``, ``actions (N A)`` or ``(N,)``,
            ``rewards (N,)``, ``lengths (E,)``.
        spec: the benchmark's shared settings (sizes, optimiser, scales, normalisation).
    """

    name = "HF transformers DecisionTransformerModel"

    def __init__(self, data: dict[str, np.ndarray], spec: dict[str, Any]) -> None:
        from transformers import DecisionTransformerConfig, DecisionTransformerModel

        self.spec = spec
        self.discrete = bool(spec["discrete"])
        self.K, self.act_dim = int(spec["context_len"]), int(spec["act_dim"])
        self.rng = np.random.default_rng(spec["seed"] + 1)
        torch.manual_seed(spec["seed"])
        config = DecisionTransformerConfig(
            state_dim=spec["obs_dim"],
            act_dim=self.act_dim,
            hidden_size=spec["d_model"],
            max_ep_len=spec["max_timestep"],
            action_tanh=not self.discrete,
            n_layer=spec["n_layers"],
            n_head=spec["n_heads"],
            resid_pdrop=spec["dropout"],
            embd_pdrop=spec["dropout"],
            attn_pdrop=spec["dropout"],
            bos_token_id=None,  # no vocabulary here; the GPT-2 defaults only trigger warnings
            eos_token_id=None,
        )
        self.device = torch.device(spec.get("device", "cpu"))
        self.model = DecisionTransformerModel(config).to(self.device)
        self.obs_mean = np.asarray(spec["obs_mean"], dtype=np.float32)
        self.obs_std = np.asarray(spec["obs_std"], dtype=np.float32)
        self.low = np.asarray(spec["action_low"] or [-1.0] * self.act_dim, dtype=np.float32)
        self.high = np.asarray(spec["action_high"] or [1.0] * self.act_dim, dtype=np.float32)
        self._index(data)
        # HF Trainer's default: no weight decay on biases and LayerNorm weights.
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if name.endswith("bias") or "ln" in name.lower() else decay).append(p)
        self.opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": spec["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=spec["lr"],
        )
        warmup = max(1, int(spec["warmup_steps"]))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warmup))
        self.steps_done = 0
        self.last_loss = float("nan")

    # ----------------------------------------------------------------- data
    def _index(self, data: dict[str, np.ndarray]) -> None:
        lengths = np.asarray(data["lengths"], dtype=np.int64)
        self.lengths = lengths
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (E,)
        self.p_episode = lengths / lengths.sum()  # the docs' collator: length-proportional
        obs = (np.asarray(data["observations"], dtype=np.float32) - self.obs_mean) / self.obs_std
        self.obs = obs.astype(np.float32)
        if self.discrete:
            self.actions = np.eye(self.act_dim, dtype=np.float32)[np.asarray(data["actions"], dtype=np.int64)]
        else:
            a = np.asarray(data["actions"], dtype=np.float32).reshape(len(obs), -1)
            self.actions = ((a - self.low) / (self.high - self.low) * 2 - 1).astype(np.float32)
        rewards = np.asarray(data["rewards"], dtype=np.float64)
        rtg = np.empty(len(rewards), dtype=np.float32)  # undiscounted return-to-go per episode
        for s, n in zip(self.starts, lengths):
            rtg[s : s + n] = np.cumsum(rewards[s : s + n][::-1])[::-1]
        self.rtg = rtg * np.float32(self.spec["reward_scale"])

    def sample_batch(self) -> Batch:
        """``batch_size`` windows: states (B K obs), actions (B K A), returns_to_go (B K 1),
        timesteps (B K), attention_mask (B K) — left-padded, as the docs' collator builds them."""
        B, K = int(self.spec["batch_size"]), self.K
        eps = self.rng.choice(len(self.lengths), size=B, p=self.p_episode)
        s = np.zeros((B, K, self.obs.shape[1]), np.float32)
        a = np.zeros((B, K, self.act_dim), np.float32)
        r = np.zeros((B, K, 1), np.float32)
        t = np.zeros((B, K), np.int64)
        m = np.zeros((B, K), np.int64)
        for i, e in enumerate(eps):
            si = int(self.rng.integers(self.lengths[e]))
            n = min(K, int(self.lengths[e]) - si)
            rows = slice(self.starts[e] + si, self.starts[e] + si + n)
            s[i, K - n :], a[i, K - n :], r[i, K - n :, 0] = (
                self.obs[rows],
                self.actions[rows],
                self.rtg[rows],
            )
            t[i, K - n :] = np.minimum(np.arange(si, si + n), self.spec["max_timestep"] - 1)
            m[i, K - n :] = 1
        return {
            "states": torch.from_numpy(s),
            "actions": torch.from_numpy(a),
            "rewards": torch.zeros(B, K, 1),
            "returns_to_go": torch.from_numpy(r),
            "timesteps": torch.from_numpy(t),
            "attention_mask": torch.from_numpy(m),
        }

    # ----------------------------------------------------------------- training
    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def loss(self, batch: Batch) -> torch.Tensor:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        _, action_preds, _ = self.model(**batch, return_dict=False)
        keep = batch["attention_mask"].reshape(-1) > 0
        pred = action_preds.reshape(-1, self.act_dim)[keep]
        target = batch["actions"].reshape(-1, self.act_dim)[keep]
        if self.discrete:
            return F.cross_entropy(pred, target.argmax(-1))
        return F.mse_loss(pred, target)

    def train(self, steps: int) -> float:
        """Run ``steps`` optimiser steps (sampling included); returns the seconds taken."""
        self.model.train()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = self.loss(self.sample_batch())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec["grad_clip"])
            self.opt.step()
            self.sched.step()
        self._synchronize()
        self.last_loss = float(loss.detach())
        self.steps_done += steps
        return time.perf_counter() - t0

    def flops_per_step(self) -> float:
        """Forward + backward FLOPs of one training batch (optimiser not counted)."""
        with FlopCounterMode(display=False) as counter:
            self.loss(self.sample_batch()).backward()
        self.opt.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def _act(
        self, states: torch.Tensor, actions: torch.Tensor, rtg: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The docs' ``get_action``: last K steps of the history, left-padded, batch 1."""
        K, n = self.K, min(self.K, states.shape[0])
        pad = K - n

        def window(x: torch.Tensor) -> torch.Tensor:
            x = x[-n:]
            return torch.cat([torch.zeros(pad, *x.shape[1:], dtype=x.dtype, device=x.device), x])[None]

        dev = self.device
        mask = torch.cat(
            [torch.zeros(pad, dtype=torch.long, device=dev), torch.ones(n, dtype=torch.long, device=dev)]
        )
        _, action_preds, _ = self.model(
            states=window(states),
            actions=window(actions),
            rewards=torch.zeros(1, K, 1, device=dev),
            returns_to_go=window(rtg),
            timesteps=window(timesteps),
            attention_mask=mask[None],
            return_dict=False,
        )
        return action_preds[0, -1]

    def evaluate(self, episodes: int, seed: int, target: float) -> dict[str, Any]:
        """Episodes one at a time (env seed ``seed + i``); returns, lengths and seconds."""
        self.model.eval()
        scale, env = float(self.spec["reward_scale"]), gym.make(self.spec["env_id"])
        returns, lengths = [], []
        t0 = time.perf_counter()
        dev = self.device  # the docs' loop keeps its history on the model's device

        def state(obs: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(((obs - self.obs_mean) / self.obs_std).astype(np.float32))[None].to(dev)

        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            states = state(obs)
            actions = torch.zeros(0, self.act_dim, device=dev)
            rtg = torch.tensor([[target * scale]], dtype=torch.float32, device=dev)
            timesteps = torch.zeros(1, dtype=torch.long, device=dev)
            total, done, t = 0.0, False, 0
            while not done:
                actions = torch.cat([actions, torch.zeros(1, self.act_dim, device=dev)])
                out = self._act(states, actions, rtg, timesteps)
                if self.discrete:
                    env_action = int(out.argmax())
                    actions[-1] = F.one_hot(torch.tensor(env_action), self.act_dim).float()
                else:
                    actions[-1] = out
                    env_action = ((out.cpu().numpy() + 1) / 2 * (self.high - self.low) + self.low).astype(
                        np.float32
                    )
                obs, reward, terminated, truncated, _ = env.step(env_action)
                total += float(reward)
                done, t = terminated or truncated, t + 1
                states = torch.cat([states, state(obs)])
                rtg = torch.cat([rtg, rtg[-1:] - float(reward) * scale])
                step = torch.tensor([min(t, self.spec["max_timestep"] - 1)], device=dev)
                timesteps = torch.cat([timesteps, step])
            returns.append(total)
            lengths.append(t)
        env.close()
        return {"returns": returns, "lengths": lengths, "seconds": time.perf_counter() - t0}
