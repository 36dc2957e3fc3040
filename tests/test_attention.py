"""backbones/attention.py: the one attention and KV cache every stack uses."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lit_seqrl.backbones.attention import CausalSelfAttention, layer_indices
from lit_seqrl.registry import build_backbone

KV_BACKBONES = {
    "transformer": {"n_heads": 2},
    "dtqn_transformer": {"n_heads": 2},
    "mamba2_hybrid": {"n_heads": 2},
    "dc_hybrid": {"n_heads": 2},
}


class AllocatedBytes(TorchDispatchMode):
    """Counts the bytes of new storage the ops create (outputs that alias no input)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
        }
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.bytes += t.untyped_storage().nbytes()
        return out


def bytes_of_one_step(name: str, max_seq_len: int, tokens_before: int = 3) -> int:
    torch.manual_seed(0)
    backbone = build_backbone(
        name, d_model=16, n_layers=2, max_seq_len=max_seq_len, **KV_BACKBONES[name]
    ).eval()
    x = torch.randn(tokens_before + 1, 4, 16)
    with torch.no_grad():
        state = backbone.init_state(4)
        for t in range(tokens_before):
            _, state = backbone.step(x[t], state)
        with AllocatedBytes() as counter:
            backbone.step(x[tokens_before], state)
    return counter.bytes


@pytest.mark.parametrize("name", sorted(KV_BACKBONES))
def test_a_step_allocates_the_same_whatever_the_cache_capacity(name):
    # A step that copies its cache (or attends over all of it) allocates O(max_seq_len) per token.
    small, large = bytes_of_one_step(name, 16), bytes_of_one_step(name, 4096)
    assert large == small, f"{name}: one step allocates {large} bytes with 4096 slots, {small} with 16"


def test_step_writes_into_the_cache_and_attends_over_the_filled_prefix():
    torch.manual_seed(0)
    attn = CausalSelfAttention(d_model=8, n_heads=2, max_seq_len=5).eval()
    x = torch.randn(3, 4, 8)  # (B L D)
    cache = attn.init_state(3)
    k_storage = cache["k"].untyped_storage().data_ptr()
    with torch.no_grad():
        ys = []
        for t in range(4):
            y, cache = attn.step(x[:, t], cache)
            ys.append(y)
        assert cache["k"].untyped_storage().data_ptr() == k_storage  # the same cache, written in place
        assert cache["pos"].tolist() == [4, 4, 4]
        torch.testing.assert_close(torch.stack(ys, dim=1), attn(x), rtol=1e-5, atol=1e-6)
        # Rows at different lengths: row 0 restarts (pos 0) and sees only its new token.
        cache["pos"][0] = 0
        y, _ = attn.step(x[:, 0], cache)
        torch.testing.assert_close(y[0], attn(x[:1, :1])[0, 0], rtol=1e-5, atol=1e-6)


def test_full_cache_is_a_clear_error_for_every_stack():
    for name, kwargs in KV_BACKBONES.items():
        backbone = build_backbone(name, d_model=16, n_layers=2, max_seq_len=2, **kwargs).eval()
        state = backbone.init_state(1)
        with torch.no_grad():
            for _ in range(2):
                _, state = backbone.step(torch.randn(1, 16), state)
            with pytest.raises(ValueError, match="KV cache is full"):
                backbone.step(torch.randn(1, 16), state)


def test_every_stack_uses_the_one_attention():
    for name, kwargs in KV_BACKBONES.items():
        backbone = build_backbone(name, d_model=16, n_layers=2, **kwargs)
        kinds = {type(m) for m in backbone.modules() if "Attention" in type(m).__name__}
        assert kinds == {CausalSelfAttention}, (name, kinds)


def test_layer_indices():
    assert layer_indices("middle", 3) == [1] and layer_indices("last", 3) == [2]
    assert layer_indices([2, 0, 2], 3) == [0, 2]
    with pytest.raises(ValueError, match="attn_layers"):
        layer_indices([3], 3)
    with pytest.raises(ValueError, match="attn_layers"):
        layer_indices("first", 3)
