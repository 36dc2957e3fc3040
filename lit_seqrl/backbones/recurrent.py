"""LSTM and GRU backbones (the history encoders of DRQN-style agents).

Both wrap the cuDNN-backed ``nn.LSTM`` / ``nn.GRU`` with ``hidden_size == d_model``, so a backbone
output feeds the agent's heads directly. The step state is kept batch-first, as the backbone
contract asks (PyTorch's recurrent modules use ``(layers, B, H)``; we transpose at the boundary).

Masks: real tokens of each row are packed to the front before the recurrence runs, so padding (on
either side) never enters the hidden state; outputs at padded positions are zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lit_seqrl.backbones.base import Backbone, State


class _RecurrentBackbone(Backbone):
    """Shared forward/step logic; subclasses pick the cell and name its state tensors."""

    rnn: nn.LSTM | nn.GRU
    #: Names of the state tensors, in the order PyTorch's module takes them.
    state_names: tuple[str, ...]

    def __init__(self, d_model: int, n_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__(d_model)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_layers = n_layers
        self.dropout = dropout
        self.rnn = self._make_rnn(d_model, n_layers, dropout if n_layers > 1 else 0.0)

    def _make_rnn(self, d_model: int, n_layers: int, dropout: float) -> nn.LSTM | nn.GRU:
        raise NotImplementedError

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """``{name: (B, n_layers, D)}`` zeros for each of :attr:`state_names`."""
        shape = (batch_size, self.n_layers, self.d_model)
        return {name: torch.zeros(shape, device=device, dtype=dtype) for name in self.state_names}

    # The state is batch first; PyTorch's recurrent modules take (layers, B, H).
    def _to_torch(self, state: State) -> Tensor | tuple[Tensor, ...]:
        hidden = tuple(state[name].transpose(0, 1).contiguous() for name in self.state_names)
        return hidden if len(hidden) > 1 else hidden[0]

    def _from_torch(self, hidden: Tensor | tuple[Tensor, ...]) -> State:
        hidden = hidden if isinstance(hidden, tuple) else (hidden,)
        return {name: h.transpose(0, 1) for name, h in zip(self.state_names, hidden)}

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x (B, L, D) -> (B, L, D)``; ``mask (B, L)`` True for real tokens (any padding side)."""
        if mask is None or bool(mask.all()):
            y, _ = self.rnn(x)
            return y
        L = x.shape[1]
        mask = mask.to(torch.bool)
        # Stable sort puts each row's real tokens first, in their original order.
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (B, L)
        gather = order.unsqueeze(-1).expand_as(x)
        packed_x = torch.gather(x, 1, gather)  # (B, L, D), real tokens first
        lengths = mask.sum(dim=1).clamp_min(1).cpu()  # a row with no real token runs one dummy step
        packed = pack_padded_sequence(packed_x, lengths, batch_first=True, enforce_sorted=False)
        y_packed, _ = self.rnn(packed)
        y_front, _ = pad_packed_sequence(y_packed, batch_first=True, total_length=L)  # (B, L, D)
        y = torch.zeros_like(y_front).scatter(1, gather, y_front)  # back to the original positions
        return y * mask.unsqueeze(-1).to(y.dtype)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One token ``x_t (B, D)`` -> ``y_t (B, D)`` and the new state."""
        y, hidden = self.rnn(x_t.unsqueeze(1), self._to_torch(state))
        return y.squeeze(1), self._from_torch(hidden)


class LSTMBackbone(_RecurrentBackbone):
    """Multi-layer LSTM. State: ``{"h": (B, n_layers, D), "c": (B, n_layers, D)}``.

    Args:
        d_model: input and hidden width.
        n_layers: stacked LSTM layers.
        dropout: dropout between layers (ignored for one layer, as in ``nn.LSTM``).
    """

    state_names = ("h", "c")

    def _make_rnn(self, d_model: int, n_layers: int, dropout: float) -> nn.LSTM:
        return nn.LSTM(d_model, d_model, num_layers=n_layers, dropout=dropout, batch_first=True)


class GRUBackbone(_RecurrentBackbone):
    """Multi-layer GRU. State: ``{"h": (B, n_layers, D)}``.

    Args:
        d_model: input and hidden width.
        n_layers: stacked GRU layers.
        dropout: dropout between layers (ignored for one layer, as in ``nn.GRU``).
    """

    state_names = ("h",)

    def _make_rnn(self, d_model: int, n_layers: int, dropout: float) -> nn.GRU:
        return nn.GRU(d_model, d_model, num_layers=n_layers, dropout=dropout, batch_first=True)
