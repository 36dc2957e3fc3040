"""HiPPO-RNN (Gu et al. 2020, "HiPPO: Recurrent Memory with Optimal Polynomial Projections").

A gated RNN cell whose extra memory ``c_t ∈ R^N`` is not learned but maintained by the fixed,
discretised HiPPO operators acting on a scalar feature of the hidden state:

    h_t = τ(h_{t-1}, [x_t, c_{t-1}])        τ: GRU or LSTM cell (trained)
    f_t = w · h_t + b                       scalar projection (trained)
    c_t = Ā_t c_{t-1} + B̄_t f_t             HiPPO-LegS / LegT / LagT (fixed buffers)
    y_t = W_out [h_t, c_t]

so ``c_t`` holds the optimal polynomial approximation of the whole history of ``f`` (LegS, scale
invariant: ``Ā_t, B̄_t`` use step ``1/t``), of a sliding window of ``theta`` steps (LegT), or of an
exponentially decaying past with time scale ``theta`` steps (LagT). ``forward`` loops over time in
Python with the same cell as ``step``, so the two agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lit_seqrl.backbones.base import Backbone, State
from lit_seqrl.ops.hippo import Measure, Method, discretize, hippo_step, legs_initial, transition


@dataclass
class HippoRNNConfig:
    d_model: int
    d_hidden: int | None = None  # RNN width; defaults to d_model
    d_state: int = 64  # N: HiPPO memory size
    measure: Measure = "legs"
    theta: float = 100.0  # LegT window / LagT time scale, in steps (LegS has no time scale)
    method: Method = "bilinear"
    cell: Literal["gru", "lstm"] = "gru"
    dropout: float = 0.0


class HippoRNN(Backbone):
    """HiPPO-RNN backbone: ``x (B, L, D) -> (B, L, D)``; only the cell and projections are trained."""

    def __init__(
        self,
        d_model: int,
        d_hidden: int | None = None,
        d_state: int = 64,
        measure: Measure = "legs",
        theta: float = 100.0,
        method: Method = "bilinear",
        cell: Literal["gru", "lstm"] = "gru",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(d_model)
        cfg = HippoRNNConfig(d_model, d_hidden, d_state, measure, theta, method, cell, dropout)
        self.config = cfg
        H, N = d_hidden or d_model, d_state
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        self.cell = (nn.GRUCell if cell == "gru" else nn.LSTMCell)(d_model + N, H)
        self.to_f = nn.Linear(H, 1)  # f_t: the scalar the memory compresses
        self.out = nn.Linear(H + N, d_model)
        self.dropout = nn.Dropout(dropout)

        A, B = transition(measure, N, theta)  # float64 (N N), (N)
        if measure == "legs":  # time-varying: discretised per step from the continuous operators
            self.register_buffer("A", A.float())
            self.register_buffer("B", B.float())
        else:  # time-invariant: discretise once (in float64), unit step = one token
            A_bar, B_bar = discretize(A, B, 1.0, method)
            self.register_buffer("A_bar", A_bar.float())
            self.register_buffer("B_bar", B_bar.float())

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """``h (B, H)``, ``c (B, N)`` HiPPO memory, ``t (B,)`` steps seen, plus ``cell (B, H)`` for LSTM."""
        H, N = self.cell.hidden_size, self.config.d_state
        dtype = dtype or torch.float32
        state = {
            "h": torch.zeros(batch_size, H, device=device, dtype=dtype),
            "c": torch.zeros(batch_size, N, device=device, dtype=dtype),
            "t": torch.zeros(batch_size, device=device, dtype=dtype),
        }
        if self.config.cell == "lstm":
            state["cell"] = torch.zeros(batch_size, H, device=device, dtype=dtype)
        return state

    def _memory(self, c: Tensor, f: Tensor, t: Tensor) -> Tensor:
        """HiPPO update ``c (B, N)``, ``f (B,)`` at step ``t (B,)`` (1-based) -> ``(B, N)``."""
        if self.config.measure != "legs":
            return c @ self.A_bar.T + f[:, None] * self.B_bar
        # LegS: step 1/t per row (rows restart independently); the first step is exact (see legs_initial).
        c_next = hippo_step(
            self.A, self.B, c, f, 1.0 / t.clamp(min=1), self.config.method, lower=True
        )  # (B N)
        return torch.where((t <= 1)[:, None], legs_initial(f, c.shape[-1]), c_next)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """``x_t (B, D)`` -> ``y_t (B, D)`` and the new state."""
        inp = torch.cat([x_t, state["c"]], dim=-1)  # (B D+N)
        if self.config.cell == "lstm":
            h, cell = self.cell(inp, (state["h"], state["cell"]))
        else:
            h, cell = self.cell(inp, state["h"]), None  # (B H)
        t = state["t"] + 1
        c = self._memory(state["c"], self.to_f(h)[:, 0], t)  # (B N) from f_t (B)
        y = self.out(self.dropout(torch.cat([h, c], dim=-1)))  # (B D)
        new = {"h": h, "c": c, "t": t}  # init_state's layout
        if cell is not None:
            new["cell"] = cell
        return y, new

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x (B, L, D)``, optional left-padding ``mask (B, L)`` -> ``(B, L, D)``.

        Padded steps leave the state untouched, so real tokens see a fresh start.
        """
        state = self.init_state(x.shape[0], x.device, x.dtype)
        ys = []
        for t in range(x.shape[1]):
            y, new = self.step(x[:, t], state)
            if mask is not None:
                keep = mask[:, t]
                new = {
                    k: torch.where(keep.view(-1, *([1] * (v.dim() - 1))), v, state[k]) for k, v in new.items()
                }
            state = new
            ys.append(y)
        return torch.stack(ys, dim=1)
