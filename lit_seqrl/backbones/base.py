"""The backbone contract: a causal sequence mixer [B, L, D] -> [B, L, D] that knows no RL.

Every backbone (built-in or from a plugin package) subclasses :class:`Backbone`:

* ``forward(x, mask)``: the whole sequence at once (training, window evaluation);
  ``forward_at(x, mask, index)`` the same read at some positions only (may skip work);
* ``init_state(batch_size, device, dtype)`` / ``step(x_t, state)``: one token at a time
  (recurrent evaluation), equal to ``forward`` up to fp32 tolerance;
* the state is a pytree (nested dict/list/tuple) of tensors whose first dimension is the batch,
  so one row can be reset when its environment starts a new episode (:meth:`Backbone.reset_state`).

The state convention, the same for every backbone:

1. ``step`` returns the state to continue from, and the caller always continues from it. The
   state passed in is *spent*: ``step`` may write into its tensors (a KV cache writes the new
   key and value in place, so a token costs O(tokens seen), not a copy of the cache). To keep
   a state for later (branching, a look-ahead), copy it first: ``tree_map(torch.clone, state)``.
2. The returned state has the structure of ``init_state``'s: the same pytree, and every leaf
   the same shape, dtype and device. Everything a backbone remembers is in it, none in the module.
3. Per-row reset is ``reset_state(state, done)``: the rows where ``done`` is True become
   ``init_state``'s rows, the others are untouched.
4. No step copies its whole state: O(1) per token for SSMs and RNNs, O(tokens seen) for attention.

``lit_seqrl.testing.check_backbone`` verifies 1.-3. for any backbone; 4. it cannot see (the
built-ins have a test that counts the bytes a step allocates at two cache capacities).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map

State = Any  # pytree of tensors, batch first
Init = TypeVar("Init", bound=Callable[..., None])


class Backbone(nn.Module):
    """Base class of all sequence backbones.

    Subclasses take ``d_model`` plus their own keyword arguments, so that a config entry
    ``backbone: {name: mamba, d_model: 128, n_layers: 3}`` builds them through the registry.
    """

    d_model: int
    #: False for backbones that cannot run token by token (they then only support window evaluation).
    supports_step: bool = True

    def __init__(self, d_model: int) -> None:
        super().__init__()
        if d_model < 1:
            raise ValueError(f"d_model must be >= 1, got {d_model}")
        self.d_model = d_model

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mix a sequence causally.

        Args:
            x: ``(B, L, D)`` input tokens.
            mask: optional ``(B, L)`` bool, True for real tokens. Padding is on the left;
                backbones keep padded tokens from influencing real ones where they can.

        Returns:
            ``(B, L, D)``; output ``t`` depends only on inputs ``<= t``.
        """
        raise NotImplementedError

    def forward_at(
        self, x: Tensor, mask: Tensor | None = None, index: slice | Tensor | None = None
    ) -> Tensor:
        """``forward(x, mask)[:, index]``: the outputs at some positions only (``(B, L', D)``).

        ``index=None`` means every position (``forward`` itself). Agents call this when they read
        only some tokens (DT reads the state tokens; a policy acting from a window reads the
        newest one). Override it to skip work for the other positions, as the transformer does in
        its last block; the result must stay equal.
        """
        y = self(x, mask)
        return y if index is None else y[:, index]

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The state before the first token: a pytree of tensors with batch as dim 0."""
        raise NotImplementedError(f"{type(self).__name__} does not support step-by-step inference")

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """Advance by one token: ``x_t (B, D) -> y_t (B, D)`` and the state to continue from.

        ``state`` is spent by the call (see the module docstring for the state convention).
        """
        raise NotImplementedError(f"{type(self).__name__} does not support step-by-step inference")

    def reset_state(self, state: State, done: Tensor) -> State:
        """Reset the rows of ``state`` where ``done`` (``(B,)`` bool) is True to the initial state."""
        leaves = _leaves(state)
        if not leaves:
            return state
        fresh = self.init_state(done.shape[0], device=leaves[0].device, dtype=_float_dtype(leaves))

        def pick(old: Tensor, new: Tensor) -> Tensor:
            rows = done.to(old.device).view(-1, *([1] * (old.dim() - 1)))
            return torch.where(rows, new.to(old.dtype), old)

        return tree_map(pick, state, fresh)


class Stack(Backbone):
    """Blocks applied in order, then a final norm: the shape of the built-in backbones.

    Each block maps ``forward(x (B, L, D), mask (B, L) | None) -> (B, L, D)`` (it turns the token
    mask into what it needs) and, to step, has ``init_state(batch_size, device, dtype)`` and
    ``step(x_t, state) -> (y_t, state)``. The stack's state is the list of its blocks' states.

    Args:
        d_model: token width.
        blocks: the blocks, bottom first.
        norm: the final norm.
        names: the attribute names of the block list and the final norm, so that checkpoint keys
            follow each model's reference code (GPT's ``blocks``/``ln_f``, mamba_ssm's
            ``layers``/``norm_f``).
    """

    def __init__(
        self,
        d_model: int,
        blocks: Iterable[nn.Module],
        norm: nn.Module,
        names: tuple[str, str] = ("blocks", "ln_f"),
    ) -> None:
        super().__init__(d_model)
        self._names = names
        self.add_module(names[0], nn.ModuleList(blocks))
        self.add_module(names[1], norm)

    @property
    def stack(self) -> nn.ModuleList:
        """The blocks, bottom first."""
        return getattr(self, self._names[0])

    @property
    def final_norm(self) -> nn.Module:
        return getattr(self, self._names[1])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x (B, L, D)``, optional ``mask (B, L)`` (True = real token) -> ``(B, L, D)``."""
        for block in self.stack:
            x = block(x, mask)
        return self.final_norm(x)

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """One state per block, bottom first."""
        return [block.init_state(batch_size, device, dtype) for block in self.stack]

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """``x_t (B, D)`` -> ``(B, D)`` through every block's ``step``, then the final norm."""
        new_state = []
        for block, block_state in zip(self.stack, state):
            x_t, block_state = block.step(x_t, block_state)
            new_state.append(block_state)
        return self.final_norm(x_t), new_state


class PreNormBlock(nn.Module):
    """Pre-norm residual block ``x <- x + Dropout(mixer(Norm(x), mask))`` (Mamba, Mamba-2, S4).

    The mixer maps ``forward(h (B, L, D), mask (B, L) | None) -> (B, L, D)`` and steps with
    ``init_state(batch_size, device, dtype)`` / ``step(h_t, state) -> (y_t, state)``; the block's
    state is the mixer's.
    """

    def __init__(self, norm: nn.Module, mixer: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = norm
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return x + self.dropout(self.mixer(self.norm(x), mask))

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        return self.mixer.init_state(batch_size, device, dtype)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        y, state = self.mixer.step(self.norm(x_t), state)
        return x_t + self.dropout(y), state


def options_from(config: type) -> Callable[[Init], Init]:
    """Decorate ``__init__(self, d_model, **options)`` of a backbone built from a config dataclass.

    The dataclass stays the one list of the backbone's options (names, types, defaults), and the
    constructor's signature becomes ``(self, d_model, *, <the other fields>)``, so that
    ``inspect.signature`` (the registry's ``strict=False``, ``help()``) sees every option.
    """
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("d_model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="int"),
    ]
    for f in dataclasses.fields(config):
        if f.name != "d_model":
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            params.append(inspect.Parameter(f.name, keyword, default=default, annotation=f.type))

    def wrap(init: Init) -> Init:
        init.__signature__ = inspect.Signature(params, return_annotation="None")  # type: ignore[attr-defined]
        return init

    return wrap


def mark_parameters(
    *params: nn.Parameter,
    weight_decay: float | None = None,
    lr_scale: float | None = None,
    lr_max: float | None = None,
) -> None:
    """Ask the agents' optimiser for special settings for these parameters.

    SSM parameters (A, Δ, B, C) typically want no weight decay and sometimes a smaller learning
    rate. ``weight_decay=0.0`` disables decay; ``lr_scale`` multiplies the agent's learning rate;
    ``lr_max`` caps it (S4 trains its SSM parameters at min(lr, 1e-3)).
    """
    for p in params:
        opts = dict(getattr(p, "_optim", {}))
        for key, value in (("weight_decay", weight_decay), ("lr_scale", lr_scale), ("lr_max", lr_max)):
            if value is not None:
                opts[key] = value
        p._optim = opts  # type: ignore[attr-defined]


def _leaves(state: State) -> list[Tensor]:
    return [t for t in tree_leaves(state) if isinstance(t, Tensor)]


def _float_dtype(leaves: list[Tensor]) -> torch.dtype | None:
    for t in leaves:
        if t.is_floating_point():
            return t.dtype
    return None
