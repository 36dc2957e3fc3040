"""Acting with a :class:`DecisionAgent` on M vectorised envs at once.

``window``: keep the last K steps per env and re-encode them, batched over all envs — exactly
what training saw. ``recurrent``: feed each new token through ``backbone.step`` and carry the
state, O(1) per env step for SSMs (a KV cache for attention); rows are reset on their own.
Window mode re-encodes the same shapes every step, so it can act through one compiled graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from lit_seqrl.errors import ConfigError

if TYPE_CHECKING:
    from lit_seqrl.agents.decision import DecisionAgent


class _Compiled:
    """``torch.compile(fn)``, falling back to ``fn`` (with one warning) if compiling fails."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        self.fn, self.compiled = fn, torch.compile(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # inductor fails in many ways (e.g. no C++ compiler on CPU)
                warnings.warn(f"torch.compile failed, acting eagerly: {err}", stacklevel=2)
                self.compiled = None
        return self.fn(*args, **kwargs)


class DecisionPolicy:
    """A :class:`lit_seqrl.data.env_loop.VectorPolicy` conditioned on one target return.

    ``compile`` (default: the agent's ``eval_compile``) acts through ``torch.compile`` of the
    agent's forward in window mode; recurrent mode always runs eagerly.
    """

    def __init__(
        self,
        agent: DecisionAgent,
        target_return: float,
        mode: str = "window",
        context_len: int | None = None,
        compile: bool | None = None,
    ) -> None:
        if mode == "recurrent" and not agent.backbone.supports_step:
            raise ConfigError(
                f"backbone {type(agent.backbone).__name__} has no step(); use eval mode 'window'"
            )
        self.agent, self.mode = agent, mode
        if compile is None:
            compile = bool(agent.hparams.get("eval_compile", False))
        self.forward: Callable[..., Tensor] = (
            _Compiled(agent.forward) if compile and mode == "window" else agent
        )
        spec = agent.spec
        self.K = context_len or spec["context_len"]
        self.scale = float(spec.get("reward_scale", 1.0))
        self.gamma = float(spec.get("gamma", 1.0))
        # Trained on delayed rewards, the return-to-go only drops at the end: keep it constant.
        self.decrement = not spec.get("delayed_reward", False)
        self.discrete, self.act_dim = spec["discrete"], spec["act_dim"]
        self.target = float(target_return) * self.scale
        self.device = agent.obs_mean.device
        self.m = 0

    def _allocate(self, m: int) -> None:
        dev, K = self.device, self.K
        self.m = m
        # float64: (rtg - r) / gamma multiplies rounding by 1/gamma every step, and in float32
        # that drifts visibly within a few hundred steps at gamma = 0.9.
        self.rtg = torch.full((m,), self.target, device=dev, dtype=torch.float64)  # (M) scaled
        self.t = torch.zeros(m, dtype=torch.long, device=dev)  # (M) step within the episode
        act_shape = (m, K) if self.discrete else (m, K, self.act_dim)
        if self.mode == "window":
            self.obs_buf = torch.zeros(m, K, self.agent.spec["obs_dim"], device=dev)  # (M K obs)
            self.act_buf = torch.zeros(
                act_shape, device=dev, dtype=torch.long if self.discrete else torch.float32
            )
            self.rtg_buf = torch.zeros(m, K, 1, device=dev)  # (M K 1)
            self.t_buf = torch.zeros(m, K, dtype=torch.long, device=dev)
            self.mask_buf = torch.zeros(m, K, dtype=torch.bool, device=dev)
        else:
            self.state = self.agent.backbone.init_state(m, device=dev, dtype=torch.float32)
            prev_shape, prev_dtype = (
                ((m,), torch.long) if self.discrete else ((m, self.act_dim), torch.float32)
            )
            self.prev_action = torch.zeros(prev_shape, dtype=prev_dtype, device=dev)  # a_{t-1} per row
            self.has_prev = torch.zeros(m, dtype=torch.bool, device=dev)

    def reset(self, rows: np.ndarray) -> None:
        if self.m != len(rows):
            self._allocate(len(rows))
        r = torch.as_tensor(rows, device=self.device)
        self.rtg[r], self.t[r] = self.target, 0
        if self.mode == "window":
            self.mask_buf[r] = False
            self.obs_buf[r], self.act_buf[r], self.rtg_buf[r], self.t_buf[r] = 0, 0, 0, 0
        else:
            self.state = self.agent.backbone.reset_state(self.state, r)
            self.has_prev[r] = False

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(self.m, -1)  # (M obs)
        if self.mode == "window":
            action = self._to_action(self._act_window(o))
            self.act_buf[:, -1] = action
        else:
            action = self._act_recurrent(o)
        return action.cpu().numpy()

    def _to_action(self, out: Tensor) -> Tensor:
        """Head output ``(M A)`` -> env actions: argmax ``(M)`` or rescaled to the bounds ``(M A)``."""
        if self.discrete:
            return out.argmax(-1)
        return self.agent.denormalize_actions(out) if self.agent.squash else out

    def _act_window(self, o: Tensor) -> Tensor:
        for buf in (self.obs_buf, self.act_buf, self.rtg_buf, self.t_buf, self.mask_buf):
            buf.copy_(buf.roll(-1, dims=1))  # drop the oldest step; the newest goes at -1
        self.obs_buf[:, -1], self.rtg_buf[:, -1, 0], self.t_buf[:, -1], self.mask_buf[:, -1] = (
            o,
            self.rtg,
            self.t,
            True,
        )
        self.act_buf[:, -1] = 0  # not yet chosen; causal masking hides it from the state token
        pred = self.forward(
            self.obs_buf, self.act_buf, self.rtg_buf, self.t_buf, self.mask_buf, last_step_only=True
        )  # (M 1 A)
        return pred[:, -1]

    def _act_recurrent(self, o: Tensor) -> Tensor:
        agent, bb = self.agent, self.agent.backbone
        for token in agent.embed_step(o, self.rtg[:, None].float(), self.t, self.prev_action, self.has_prev):
            h, self.state = bb.step(token, self.state)
        action = self._to_action(agent.predict(h))
        if agent.hparams.token_layout == "interleaved":
            _, self.state = bb.step(agent.embed_action_step(action, self.t), self.state)
        self.prev_action, self.has_prev[:] = action, True
        return action

    def observe(self, rewards: np.ndarray) -> None:
        if self.decrement:
            r = torch.as_tensor(rewards, dtype=torch.float64, device=self.device) * self.scale
            self.rtg = (self.rtg - r) / self.gamma
        self.t += 1
