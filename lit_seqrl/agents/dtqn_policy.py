"""The Q-network over observation histories and the actor that runs it one step at a time.

:class:`QNetwork`: one token per observation (linear embedding + optional learned position),
any registered backbone as the history encoder (or none: a per-step MLP, i.e. DQN), and a
Q-value head at *every* position of the history.

:class:`HistoryActor` keeps the per-environment history for acting, in one of three modes:

* ``"window"`` (the agent's default, as in the DTQN paper) — re-encode the last ``K =
  context_len`` observations with ``forward`` at every step: exactly what the training windows
  look like, with the current weights.
* ``"recurrent"`` — carry the backbone state with ``step`` (hidden state, KV cache...), one token
  per environment step. The history is capped at ``K`` tokens, as in training: when a row's
  state holds ``K`` tokens it is rebuilt from that row's last ``K // 2`` observations (positions
  ``0..``), so each env step costs amortised O(1) backbone steps, and the history seen is always
  ``K // 2 .. K`` observations. Cheaper, but while training the carried state (a transformer's
  KV cache, an LSTM's hidden state) was computed by the weights of earlier updates, not by the
  current ones; DRQN acts this way.
* ``"markov"`` — the current observation only (DQN).
"""

from __future__ import annotations

from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from lit_seqrl.backbones.base import Backbone, State
from lit_seqrl.errors import ConfigError

ActMode = Literal["recurrent", "window", "markov"]


def _normal_init(module: nn.Module) -> None:
    """The official DTQN initialisation: Linear / Embedding weights N(0, 0.02), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)


class QNetwork(nn.Module):
    """Observation histories ``(B, L, obs_dim)`` -> Q-values ``(B, L, n_actions)``.

    Args:
        obs_dim: flat observation width.
        n_actions: number of discrete actions.
        d_model: token width (the backbone's ``d_model``).
        backbone: history encoder; None for DQN (no history, an MLP on each observation).
        context_len: longest history, the size of the position table.
        pos_embedding: add a learned embedding of the position in the history (DTQN; starts at zero).
        obs_bounds: ``(low, high)`` of the flat observation: when given, every observation is
            mapped affinely to ``[-1, 1]`` per dimension before the embedding (saved with the weights).
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        d_model: int,
        backbone: Backbone | None,
        context_len: int,
        pos_embedding: bool,
        obs_bounds: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        super().__init__()
        if backbone is not None and backbone.d_model != d_model:
            raise ValueError(f"backbone.d_model ({backbone.d_model}) != d_model ({d_model})")
        self.context_len = context_len
        self.obs_center: Tensor | None
        self.obs_halfwidth: Tensor | None
        if obs_bounds is None:
            self.obs_center = self.obs_halfwidth = None
        else:
            low, high = (torch.as_tensor(b, dtype=torch.float32).reshape(obs_dim) for b in obs_bounds)
            if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
                raise ConfigError(
                    f"obs_bounds need finite low < high in every dimension, got {low} and {high}"
                )
            self.register_buffer("obs_center", (high + low) / 2)
            self.register_buffer("obs_halfwidth", (high - low) / 2)
        self.embed = nn.Linear(obs_dim, d_model)
        self.pos = nn.Embedding(context_len, d_model) if pos_embedding and backbone is not None else None
        self.backbone = backbone
        # DQN's trunk: the embedding above and this make a two-hidden-layer MLP per observation.
        self.trunk = (
            nn.Sequential(nn.ReLU(), nn.Linear(d_model, d_model), nn.ReLU()) if backbone is None else None
        )
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, n_actions))
        # The official DTQN initialisation for our own layers (the backbone keeps its own):
        # N(0, 0.02) weights, zero biases, and position embeddings that start at zero.
        for part in (self.embed, self.trunk, self.head):
            if part is not None:
                _normal_init(part)
        if self.pos is not None:
            nn.init.zeros_(self.pos.weight)

    def forward(self, obs: Tensor) -> Tensor:
        """``obs (B, L, obs_dim)``, histories starting at position 0 -> ``q (B, L, A)``.

        Right padding needs no mask: every output depends on its own and earlier steps only.
        """
        L = obs.shape[1]
        if self.context_len < L and self.pos is not None:
            raise ValueError(f"history of {L} steps is longer than context_len={self.context_len}")
        x = self.embed(self._scaled(obs))  # (B L D)
        if self.pos is not None:
            x = x + self.pos.weight[:L]
        h = self.trunk(x) if self.backbone is None else self.backbone(x)  # (B L D)
        return self.head(h)

    def _scaled(self, obs: Tensor) -> Tensor:
        """Observations in ``[-1, 1]`` when bounds were given, else as they are."""
        if self.obs_center is None or self.obs_halfwidth is None:
            return obs
        return (obs - self.obs_center) / self.obs_halfwidth

    def step(self, obs_t: Tensor, positions: Tensor, state: State) -> tuple[Tensor, State]:
        """One observation per row ``obs_t (B, obs_dim)`` at ``positions (B,)`` -> ``q (B, A)``, state."""
        assert self.backbone is not None, "a network without a backbone has no step state"
        x = self.embed(self._scaled(obs_t))  # (B D)
        if self.pos is not None:
            x = x + self.pos(positions)
        h, state = self.backbone.step(x, state)
        return self.head(h), state


def _take_rows(state: State, rows: Tensor) -> State:
    return tree_map(lambda t: t[rows], state)


def _put_rows(state: State, rows: Tensor, sub: State) -> State:
    return tree_map(lambda full, part: full.index_copy(0, rows, part.to(full.dtype)), state, sub)


class HistoryActor:
    """Greedy actions for ``N`` environments from their observation histories (see module doc).

    A :class:`~lit_seqrl.data.env_loop.VectorPolicy` (``reset(rows)``, ``act(obs)``, ``observe(rewards)``); ``N``
    is taken from the first ``reset``. With ``obs_space`` given, raw observations are flattened
    (one-hot for discrete parts) exactly as during training.
    """

    def __init__(
        self, net: QNetwork, context_len: int, mode: ActMode, obs_space: gym.Space | None = None
    ) -> None:
        if mode not in ("recurrent", "window", "markov"):
            raise ConfigError(f"mode must be 'recurrent', 'window' or 'markov', got {mode!r}")
        if mode != "markov" and net.backbone is None:
            raise ConfigError(f"mode {mode!r} needs a backbone; use 'markov' for DQN")
        if mode == "recurrent" and not net.backbone.supports_step:  # type: ignore[union-attr]
            raise ConfigError(f"{type(net.backbone).__name__} cannot step; use mode='window'")
        self.net, self.K, self.mode, self.obs_space = net, context_len, mode, obs_space
        self.n = 0
        self.hist: Tensor | None = None  # (N K obs_dim), newest observation at hist_len - 1
        self.hist_len: Tensor | None = None  # (N,)
        self.n_tok: Tensor | None = None  # (N,) tokens held by the backbone state
        self.state: State = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _allocate(self, n: int, obs_dim: int) -> None:
        dev, dtype = self.device, next(self.net.parameters()).dtype
        self.n = n
        self.hist = torch.zeros(n, self.K, obs_dim, device=dev, dtype=dtype)
        self.hist_len = torch.zeros(n, dtype=torch.long, device=dev)
        self.n_tok = torch.zeros(n, dtype=torch.long, device=dev)
        if self.mode == "recurrent":
            self.state = self.net.backbone.init_state(n, device=dev, dtype=dtype)  # type: ignore[union-attr]

    def reset(self, rows: np.ndarray) -> None:
        """Rows (bool ``(N,)``) that start a new episode before the next :meth:`act`."""
        rows = np.asarray(rows, dtype=bool)
        if rows.shape[0] != self.n:
            self.n, self.hist = rows.shape[0], None  # (re)allocated at the next act
            return
        if self.hist is None:
            return
        done = torch.as_tensor(rows, device=self.device)
        self.hist_len[done] = 0
        self.n_tok[done] = 0
        if self.mode == "recurrent":
            self.state = self.net.backbone.reset_state(self.state, done)  # type: ignore[union-attr]

    def observe(self, rewards: np.ndarray) -> None:
        """Rewards are not part of a Q-network's history."""

    def _flatten(self, obs: np.ndarray) -> np.ndarray:
        if self.obs_space is None:
            return np.asarray(obs, dtype=np.float32)
        return np.stack([gym.spaces.flatten(self.obs_space, o) for o in obs]).astype(np.float32)

    def _push(self, x: Tensor) -> None:
        full = self.hist_len >= self.K
        if bool(full.any()):
            self.hist[full] = torch.roll(self.hist[full], shifts=-1, dims=1)
        slot = self.hist_len.clamp(max=self.K - 1)
        self.hist[torch.arange(self.n, device=x.device), slot] = x
        self.hist_len = (self.hist_len + 1).clamp(max=self.K)

    def _rebuild(self, rows: Tensor) -> None:
        """Restart the state of ``rows`` from their last ``K // 2`` observations (newest excluded)."""
        keep = max(1, self.K // 2) - 1  # the newest observation is stepped by act() right after
        sub = self.net.backbone.init_state(len(rows), device=self.device, dtype=self.hist.dtype)  # type: ignore[union-attr]
        past = self.hist[rows, self.K - 1 - keep : self.K - 1]  # (n keep obs_dim)
        for j in range(keep):
            positions = torch.full((len(rows),), j, dtype=torch.long, device=self.device)
            _, sub = self.net.step(past[:, j], positions, sub)
        self.state = _put_rows(self.state, rows, sub)
        self.n_tok[rows] = keep

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions ``(N,)`` for the newest observations ``obs (N, ...)``."""
        return self.q_values(obs).argmax(-1).cpu().numpy()

    @torch.no_grad()
    def q_values(self, obs: np.ndarray) -> Tensor:
        """Consume the newest observations ``obs (N, ...)``; Q-values ``(N, A)`` of the histories."""
        x = torch.as_tensor(self._flatten(obs), device=self.device)  # (N obs_dim)
        if self.hist is None or self.hist.shape[0] != x.shape[0]:
            self._allocate(x.shape[0], x.shape[1])
        was_training = self.net.training
        self.net.eval()  # greedy values without dropout noise
        try:
            self._push(x)
            if self.mode == "markov":
                q = self.net(x[:, None])[:, 0]
            elif self.mode == "window":
                q_all = self.net(self.hist[:, : int(self.hist_len.max())])  # (N L A), right-padded rows
                q = q_all[torch.arange(self.n, device=x.device), self.hist_len - 1]
            else:
                full = torch.nonzero(self.n_tok >= self.K).squeeze(1)
                if full.numel():
                    self._rebuild(full)
                q, self.state = self.net.step(x, self.n_tok, self.state)
                self.n_tok += 1
        finally:
            self.net.train(was_training)
        return q
