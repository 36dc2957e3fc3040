"""MambaDM with ``local="mamba"``: a Mamba restarted on every ``local_window``-token sub-sequence."""

from __future__ import annotations

import pytest
import torch

from lit_seqrl.backbones.mamba import MambaMixer
from lit_seqrl.backbones.mambadm import MambaDM
from lit_seqrl.registry import build_backbone
from lit_seqrl.testing import check_backbone


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"local_window": 3, "local_expand": 2, "fusion": "gate"}, {"local_window": 5}],
    ids=["default", "w3-gate", "w5"],
)
def test_conformance(kwargs):
    # seq_len 16 is not a multiple of 3, 5 or 6: the last sub-sequence is short, in forward and step.
    torch.manual_seed(0)
    check_backbone(build_backbone("mambadm", d_model=16, n_layers=2, local="mamba", **kwargs))


def _reference_local(mixer: MambaMixer, h: torch.Tensor, first: int, window: int) -> torch.Tensor:
    """The local branch at tokens ``first..L-1``, written out: one fresh Mamba run per slice
    ``[first + k W, first + (k+1) W)``, cut by hand from ``h (B, L, D)``."""
    pieces = []
    for start in range(first, h.shape[1], window):
        pieces.append(mixer(h[:, start : start + window]))  # each from a zero state
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize(("W", "pad"), [(3, 0), (4, 0), (4, 3), (6, 5), (1, 2)])
def test_local_branch_is_a_fresh_mamba_per_sub_sequence(W, pad):
    torch.manual_seed(0)
    model = MambaDM(d_model=8, n_layers=1, local="mamba", local_window=W).eval()
    block = model.layers[0]
    L = 14
    h = torch.randn(2, L, 8)
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[:, :pad] = False  # left padding: sub-sequences count from the first real token
    with torch.no_grad():
        got = block.local_mixer(h, mask)[:, pad:]
        want = _reference_local(block.local_mixer.mixer, h, pad, W)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("W", [3, 6])
def test_sub_sequence_boundaries(W):
    """Output ``t`` sees its own sub-sequence from its first token on, and nothing before it."""
    torch.manual_seed(0)
    model = MambaDM(d_model=16, n_layers=1, local="mamba", local_window=W).eval()
    x = torch.randn(2, 3 * W, 16)
    start = 2 * W  # first token of the third sub-sequence
    with torch.no_grad():
        y = model.local_features(x)
        before = x.clone()
        before[:, :start] += 5 * torch.randn(2, start, 16)
        y_before = model.local_features(before)
        assert torch.equal(y_before[:, start:], y[:, start:])  # a new sub-sequence starts from zero
        assert not torch.allclose(y_before[:, start - 1], y[:, start - 1])  # the previous one ends at start-1
        first = x.clone()
        first[:, W] += 5.0  # first token of the second sub-sequence reaches its last token
        assert not torch.allclose(model.local_features(first)[:, start - 1], y[:, start - 1])
        # The whole block does see earlier sub-sequences, through the global (Mamba) branch.
        assert not torch.allclose(model(before)[:, start], model(x)[:, start])


def test_left_padding_gives_the_unpadded_outputs():
    torch.manual_seed(0)
    model = MambaDM(d_model=16, n_layers=2, local="mamba", local_window=4).eval()
    x = torch.randn(3, 13, 16)
    mask = torch.ones(3, 13, dtype=torch.bool)
    mask[0, :5] = False
    mask[1, :2] = False  # rows padded differently: each counts sub-sequences from its own start
    noise = x.masked_fill(mask[..., None], 0.0) * 10 + x  # whatever sits in the padding
    with torch.no_grad():
        y = model(noise, mask)
        for row, p in enumerate((5, 2, 0)):
            torch.testing.assert_close(y[row, p:], model(x[row : row + 1, p:])[0], rtol=1e-5, atol=1e-5)


def test_step_restarts_the_local_state_at_each_sub_sequence():
    torch.manual_seed(0)
    model = MambaDM(d_model=8, n_layers=1, local="mamba", local_window=3).eval()
    state = model.init_state(2)
    phases = []
    with torch.no_grad():
        for x_t in torch.randn(7, 2, 8):
            _, state = model.step(x_t, state)
            phases.append(state[0]["local"]["phase"].tolist())
    assert phases == [[1, 1], [2, 2], [0, 0], [1, 1], [2, 2], [0, 0], [1, 1]]


def test_local_option_is_checked_and_conv_stays_the_default():
    assert MambaDM(d_model=8).config.local == "conv"
    with pytest.raises(ValueError, match="local must be"):
        MambaDM(d_model=8, local="attention")
