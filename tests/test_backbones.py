"""The conformance suite over every registered backbone (and its state-convention check), plus
transformer specifics."""

from __future__ import annotations

import pytest
import torch

from lit_seqrl.backbones import Backbone
from lit_seqrl.backbones.attention import attention_mask
from lit_seqrl.registry import build_backbone, list_backbones
from lit_seqrl.testing import check_backbone, check_state_convention

SMALL = {"d_model": 16, "n_layers": 2}


@pytest.mark.parametrize("name", sorted(list_backbones()))
def test_every_registered_backbone_conforms(name):
    torch.manual_seed(0)
    check_backbone(build_backbone(name, strict=False, **SMALL))


def test_transformer_ignores_padded_tokens():
    torch.manual_seed(0)
    tf = build_backbone("transformer", d_model=16, n_layers=2, n_heads=2).eval()
    x = torch.randn(2, 10, 16)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[:, :4] = False
    x2 = x.clone()
    x2[:, :4] = torch.randn(2, 4, 16) * 10  # change only padding
    y, y2 = tf(x, mask), tf(x2, mask)
    torch.testing.assert_close(y[:, 4:], y2[:, 4:])
    # and equals running on the unpadded suffix alone
    torch.testing.assert_close(y[:, 4:], tf(x[:, 4:]), rtol=1e-5, atol=1e-5)


def test_attention_mask_shape_and_fast_path():
    assert attention_mask(None, 5) is None
    assert attention_mask(torch.ones(2, 5, dtype=torch.bool), 5) is None
    m = torch.tensor([[False, True, True]])
    am = attention_mask(m, 3)
    assert am.shape == (1, 1, 3, 3)
    expected = torch.tensor([[True, False, False], [False, True, False], [False, True, True]])
    assert torch.equal(am[0, 0], expected)


def test_transformer_kv_cache_overflow_is_a_clear_error():
    tf = build_backbone("transformer", d_model=8, n_layers=1, max_seq_len=3).eval()
    state = tf.init_state(1)
    for _ in range(3):
        _, state = tf.step(torch.randn(1, 8), state)
    with pytest.raises(ValueError, match="KV cache is full"):
        tf.step(torch.randn(1, 8), state)


@pytest.mark.parametrize("padded", [False, True])
def test_transformer_forward_at_trains_like_reading_the_full_output(padded):
    # The last block skips the unread positions: same values and same gradients for every weight.
    torch.manual_seed(0)
    tf = build_backbone("transformer", d_model=16, n_layers=3, n_heads=2, dropout=0.0).train()
    x = torch.randn(3, 12, 16, requires_grad=True)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, :5] = not padded
    index = slice(1, None, 3)
    full = tf(x, mask)[:, index]
    grads_full = torch.autograd.grad(full.square().sum(), [x, *tf.parameters()])
    part = tf.forward_at(x, mask, index)
    grads_part = torch.autograd.grad(part.square().sum(), [x, *tf.parameters()])
    torch.testing.assert_close(part, full)
    for a, b in zip(grads_part, grads_full):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_transformer_activation_option():
    torch.manual_seed(0)
    gelu = build_backbone("transformer", d_model=16, n_layers=1)
    assert isinstance(gelu.blocks[0].mlp[1], torch.nn.GELU)  # GPT-2's, the default
    relu = build_backbone("transformer", d_model=16, n_layers=1, activation="relu")
    assert isinstance(relu.blocks[0].mlp[1], torch.nn.ReLU)  # the DT paper code's
    with pytest.raises(ValueError, match="activation must be one of"):
        build_backbone("transformer", d_model=16, activation="swish")


class _Counter(torch.nn.Module):
    """A tiny running-mean mixer, correct except where a test breaks the state convention."""

    def forward(self, x, mask=None):
        return torch.cumsum(x, 1) / torch.arange(1, x.shape[1] + 1)[:, None]

    def init_state(self, batch_size, device=None, dtype=None):
        return {
            "sum": torch.zeros(batch_size, 4, device=device, dtype=dtype),
            "n": torch.zeros(batch_size, 1),
        }

    def step(self, x_t, state):
        s, n = state["sum"] + x_t, state["n"] + 1
        return s / n, {"sum": s, "n": n}


class _Backbone(Backbone):
    def __init__(self, d_model=4):
        super().__init__(d_model)
        self.mix = _Counter()

    def forward(self, x, mask=None):
        return self.mix(x)

    def init_state(self, batch_size, device=None, dtype=None):
        return self.mix.init_state(batch_size, device, dtype)

    def step(self, x_t, state):
        return self.mix.step(x_t, state)


class _HiddenCount(_Backbone):
    """Keeps the token count in the module instead of the state."""

    def init_state(self, batch_size, device=None, dtype=None):
        self.n = 0
        return {"sum": torch.zeros(batch_size, 4, device=device, dtype=dtype)}

    def step(self, x_t, state):
        self.n += 1
        s = state["sum"] + x_t
        return s / self.n, {"sum": s}


class _GrowingState(_Backbone):
    """Returns a state of another structure than init_state's."""

    def step(self, x_t, state):
        y, new = super().step(x_t, state)
        return y, {**new, "last": x_t}


class _SharedState(_Backbone):
    """Aliases all states to one buffer: a cloned state cannot continue on its own."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shared", torch.zeros(1))

    def step(self, x_t, state):
        self.shared += 1
        y, new = super().step(x_t, state)
        return y + self.shared, new


def test_check_state_convention_accepts_a_correct_backbone():
    check_state_convention(_Backbone())


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        (_HiddenCount(), "keeps state outside"),
        (_GrowingState(), "structure"),
        (_SharedState(), "keeps state outside"),
    ],
)
def test_check_state_convention_rejects_broken_backbones(backbone, message):
    with pytest.raises(AssertionError, match=message):
        check_state_convention(backbone)


def test_forward_at_none_means_every_position():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4)
    for backbone in (_Backbone(), build_backbone("transformer", **SMALL | {"d_model": 4}).eval()):
        torch.testing.assert_close(backbone.forward_at(x, None, None), backbone(x))


@pytest.mark.parametrize("name", ["mamba", "mamba2", "mamba2_hybrid", "mambadm", "dc", "dc_hybrid"])
def test_left_padding_is_invisible_to_real_tokens(name):
    """Whatever sits in masked left padding, real tokens get the outputs of the unpadded sequence."""
    torch.manual_seed(0)
    backbone = build_backbone(name, d_model=16, n_layers=2).eval()
    x = torch.randn(2, 12, 16)
    mask = torch.ones(2, 12, dtype=torch.bool)
    P = 6  # padding comes in whole steps: DC's default 3 filter banks keep their token types
    mask[:, :P] = False
    x_noise = x.clone()
    x_noise[:, :P] = 10 * torch.randn(2, P, 16)
    with torch.no_grad():
        y = backbone(x, mask)
        torch.testing.assert_close(y[:, P:], backbone(x_noise, mask)[:, P:])
        torch.testing.assert_close(y[:, P:], backbone(x[:, P:]), rtol=1e-5, atol=1e-5)
