"""Conformance checks every backbone passes, ours and third-party plugins alike.

    from lit_seqrl.testing import check_backbone
    check_backbone(MyBackbone(d_model=32, n_layers=2))

Each check raises ``AssertionError`` with a message saying what broke.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map

from lit_seqrl.backbones.base import Backbone


def _seeded(shape: tuple[int, ...], seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def check_shapes(backbone: Backbone, batch: int = 3, seq_len: int = 12) -> None:
    x = _seeded((batch, seq_len, backbone.d_model), 0)
    y = backbone(x)
    assert y.shape == x.shape, (
        f"forward must map (B, L, D) -> (B, L, D): got {tuple(y.shape)} for {tuple(x.shape)}"
    )
    assert torch.isfinite(y).all(), "forward produced NaN/inf on standard-normal input"
    mask = torch.ones(batch, seq_len, dtype=torch.bool)
    mask[0, : seq_len // 2] = False  # left padding
    y_masked = backbone(x, mask=mask)
    assert y_masked.shape == x.shape, "forward with a mask must keep the shape"


def check_causality(backbone: Backbone, batch: int = 2, seq_len: int = 16, atol: float = 1e-5) -> None:
    """Perturbing x[t+1:] must leave y[:t+1] unchanged."""
    x = _seeded((batch, seq_len, backbone.d_model), 1)
    y = backbone(x)
    for t in (0, seq_len // 2, seq_len - 2):
        x2 = x.clone()
        x2[:, t + 1 :] += _seeded((batch, seq_len - t - 1, backbone.d_model), 2 + t)
        y2 = backbone(x2)
        err = (y2[:, : t + 1] - y[:, : t + 1]).abs().max().item()
        assert err <= atol, f"not causal: changing inputs after t={t} changed outputs up to t by {err:.3g}"


def check_forward_at(backbone: Backbone, batch: int = 3, seq_len: int = 12, atol: float = 1e-5) -> None:
    """``forward_at(x, mask, index)`` equals ``forward(x, mask)[:, index]`` (padded or not)."""
    x = _seeded((batch, seq_len, backbone.d_model), 6)
    mask = torch.ones(batch, seq_len, dtype=torch.bool)
    mask[0, : seq_len // 3] = False
    for m in (None, mask):
        y = backbone(x, m)
        for index in (slice(1, None, 3), slice(seq_len - 2, seq_len - 1), torch.tensor([0, 5, seq_len - 1])):
            got = backbone.forward_at(x, m, index)
            want = y[:, index]
            assert got.shape == want.shape, (
                f"forward_at({index}) shape {tuple(got.shape)} != {tuple(want.shape)}"
            )
            err = (got - want).abs().max().item()
            assert err <= atol, f"forward_at({index}) differs from forward()[:, index] by {err:.3g}"


def check_step_matches_forward(
    backbone: Backbone, batch: int = 3, seq_len: int = 16, rtol: float = 1e-4, atol: float = 1e-4
) -> None:
    """Running ``step`` from ``init_state`` over a sequence equals ``forward`` on it."""
    x = _seeded((batch, seq_len, backbone.d_model), 3)
    y = backbone(x)
    state = backbone.init_state(batch, device=x.device, dtype=x.dtype)
    _check_state(state, batch)
    ys = []
    for t in range(seq_len):
        y_t, state = backbone.step(x[:, t], state)
        assert y_t.shape == (batch, backbone.d_model), f"step must return (B, D), got {tuple(y_t.shape)}"
        ys.append(y_t)
    y_step = torch.stack(ys, dim=1)
    torch.testing.assert_close(y_step, y, rtol=rtol, atol=atol, msg=lambda m: f"step != forward: {m}")


def check_state_reset(
    backbone: Backbone, batch: int = 3, seq_len: int = 8, rtol: float = 1e-4, atol: float = 1e-4
) -> None:
    """Resetting one row of the state restarts that row only; the others carry on untouched."""
    x = _seeded((batch, 2 * seq_len, backbone.d_model), 4)
    state = backbone.init_state(batch, device=x.device, dtype=x.dtype)
    for t in range(seq_len):
        _, state = backbone.step(x[:, t], state)
    done = torch.zeros(batch, dtype=torch.bool)
    done[0] = True
    state = backbone.reset_state(state, done)
    _check_state(state, batch)
    ys = []
    for t in range(seq_len, 2 * seq_len):
        y_t, state = backbone.step(x[:, t], state)
        ys.append(y_t)
    y_after = torch.stack(ys, dim=1)
    fresh = backbone(x[:1, seq_len:])  # row 0 restarted: as if its sequence began at seq_len
    torch.testing.assert_close(
        y_after[:1], fresh, rtol=rtol, atol=atol, msg=lambda m: f"reset row differs from a fresh start: {m}"
    )
    full = backbone(x[1:])  # rows 1.. were never reset
    torch.testing.assert_close(
        y_after[1:], full[:, seq_len:], rtol=rtol, atol=atol, msg=lambda m: f"reset disturbed other rows: {m}"
    )


def check_state_convention(backbone: Backbone, batch: int = 2, seq_len: int = 6, atol: float = 1e-5) -> None:
    """The state convention of :class:`Backbone.step` (see ``lit_seqrl.backbones.base``).

    * ``step`` returns a state with ``init_state``'s structure: the same pytree, every leaf the
      same shape, dtype and device (so ``reset_state`` and batching work on any step's state);
    * everything the backbone remembers is in the state: two sequences stepped in turn, each from
      its own state, give the outputs each gives alone;
    * a state copied with ``tree_map(torch.clone, state)`` continues exactly as the original.
    """
    x = _seeded((2, batch, seq_len, backbone.d_model), 7)
    init = backbone.init_state(batch, device=x.device, dtype=x.dtype)
    want_spec, want = tree_flatten(init)[1], [(t.shape, t.dtype, t.device) for t in tree_leaves(init)]
    alone = []
    for s in range(2):
        state, ys = backbone.init_state(batch, device=x.device, dtype=x.dtype), []
        for t in range(seq_len):
            y_t, state = backbone.step(x[s, :, t], state)
            ys.append(y_t)
            got_spec = tree_flatten(state)[1]
            assert got_spec == want_spec, f"step changed the state's structure: {got_spec} != {want_spec}"
            got = [(v.shape, v.dtype, v.device) for v in tree_leaves(state)]
            assert got == want, f"step changed the state's leaves (shape, dtype, device): {got} != {want}"
        alone.append(torch.stack(ys, dim=1))
    states = [backbone.init_state(batch, device=x.device, dtype=x.dtype) for _ in range(2)]
    for t in range(seq_len):
        for s in range(2):
            y_t, states[s] = backbone.step(x[s, :, t], states[s])
            err = (y_t - alone[s][:, t]).abs().max().item()
            assert err <= atol, (
                f"two sequences stepped in turn differ from each alone by {err:.3g} at t={t}: the "
                "backbone keeps state outside the state it returns"
            )
    state = backbone.init_state(batch, device=x.device, dtype=x.dtype)
    for t in range(seq_len // 2):
        _, state = backbone.step(x[0, :, t], state)
    copy = tree_map(torch.clone, state)
    for t in range(seq_len // 2, seq_len):
        y_orig, state = backbone.step(x[0, :, t], state)
        y_copy, copy = backbone.step(x[0, :, t], copy)
        err = (y_orig - y_copy).abs().max().item()
        assert err <= atol, f"a cloned state continues differently from the original (by {err:.3g})"


def check_gradients(backbone: Backbone, batch: int = 2, seq_len: int = 8) -> None:
    x = _seeded((batch, seq_len, backbone.d_model), 5).requires_grad_(True)
    backbone(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), (
        "gradient w.r.t. the input is missing or not finite"
    )
    trainable = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]
    dead = [n for n, p in trainable if p.grad is None]
    assert not dead, f"parameters receive no gradient: {dead}"
    backbone.zero_grad(set_to_none=True)


def _check_state(state: object, batch: int) -> None:
    leaves = tree_leaves(state)
    assert leaves, "init_state must return at least one tensor"
    for leaf in leaves:
        assert isinstance(leaf, Tensor), f"state leaves must be tensors, got {type(leaf).__name__}"
        assert leaf.dim() >= 1 and leaf.shape[0] == batch, (
            f"state tensors must be batch-first, got {tuple(leaf.shape)}"
        )


def check_backbone(backbone: Backbone, seq_len: int = 16, rtol: float = 1e-4, atol: float = 1e-4) -> None:
    """Run every conformance check on ``backbone`` (on CPU, fp32, eval mode for determinism).

    Checks: shapes and masks, causality, ``forward_at`` == ``forward`` at the same positions,
    gradients reach every parameter and, when the backbone supports stepping, step-by-step ==
    forward, the state convention of ``Backbone.step`` and per-row state reset.
    """
    assert isinstance(backbone, Backbone), f"expected a lit_seqrl Backbone, got {type(backbone).__name__}"
    assert isinstance(backbone.d_model, int) and backbone.d_model > 0, (
        "backbone.d_model must be a positive int"
    )
    backbone = backbone.to("cpu", torch.float32)
    was_training = backbone.training
    try:
        backbone.train()
        check_gradients(backbone)
        backbone.eval()
        with torch.no_grad():
            check_shapes(backbone, seq_len=seq_len)
            check_causality(backbone, seq_len=seq_len)
            check_forward_at(backbone, seq_len=seq_len)
            if backbone.supports_step:
                check_step_matches_forward(backbone, seq_len=seq_len, rtol=rtol, atol=atol)
                check_state_convention(backbone)
                check_state_reset(backbone, seq_len=seq_len // 2, rtol=rtol, atol=atol)
    finally:
        backbone.train(was_training)
