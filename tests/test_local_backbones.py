"""MambaDM and Decision ConvFormer: conformance, the local receptive field, padding, options."""

from __future__ import annotations

import pytest
import torch

from lit_seqrl.backbones.conv import CausalTokenConv, DecisionConvFormer
from lit_seqrl.backbones.mambadm import MambaDM
from lit_seqrl.registry import build_backbone, list_backbones
from lit_seqrl.testing import check_backbone

CASES = [
    ("mambadm", {"fusion": "gate"}),
    ("mambadm", {"fusion": "sum", "local_window": 3, "local_expand": 2}),
    ("dc", {}),
    ("dc", {"token_types": 3, "window": 4}),
    ("dc_hybrid", {}),
    ("dc_hybrid", {"token_types": 3, "n_heads": 2, "attn_layers": [0]}),
]


def test_registered_under_their_names():
    entries = list_backbones()
    assert entries["mambadm"].cls is MambaDM
    assert entries["dc"].cls is DecisionConvFormer
    # The hybrid is the same class with another default, not a copy of it.
    assert entries["dc_hybrid"].cls is DecisionConvFormer
    assert entries["dc_hybrid"].defaults == {"attn_layers": "last"}


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_conformance(name, kwargs):
    torch.manual_seed(0)
    check_backbone(build_backbone(name, d_model=16, n_layers=2, **kwargs))


@pytest.mark.parametrize("W", [1, 3, 6])
def test_mambadm_local_branch_sees_only_its_window(W):
    torch.manual_seed(0)
    model = MambaDM(d_model=16, n_layers=1, local_window=W).eval()
    x = torch.randn(2, 14, 16)
    t = 10
    with torch.no_grad():
        y = model.local_features(x)
        far = x.clone()
        far[:, : t - W + 1] += 5 * torch.randn(2, t - W + 1, 16)  # tokens t-W and earlier
        assert torch.equal(model.local_features(far)[:, t], y[:, t])
        near = x.clone()
        near[:, t - W + 1] += 5.0  # the oldest token inside the window does matter
        assert not torch.allclose(model.local_features(near)[:, t], y[:, t])
        # The whole block does see far tokens, through the global (Mamba) branch.
        assert not torch.allclose(model(far)[:, t], model(x)[:, t])


@pytest.mark.parametrize("types", [1, 3])
def test_dc_mixer_sees_only_its_window_and_uses_filters_by_position(types):
    torch.manual_seed(0)
    conv = CausalTokenConv(8, window=6, token_types=types)
    x = torch.randn(2, 15, 8)
    with torch.no_grad():
        y = conv(x)
        far = x.clone()
        far[:, :6] += 3 * torch.randn(2, 6, 8)  # inputs 0..5; output 11 sees 6..11 only
        assert torch.equal(conv(far)[:, 11:], y[:, 11:])
        # Reference: output t = Σ_j weight[t mod T, :, j] · x[t - 5 + j]
        t = 13
        w, b = conv.weight[t % types], conv.bias[t % types]
        ref = (x[:, t - 5 : t + 1].transpose(1, 2) * w).sum(-1) + b
        torch.testing.assert_close(y[:, t], ref)


def test_hybrid_defaults_to_attention_in_the_last_block_and_options_are_checked():
    model = build_backbone("dc_hybrid", d_model=16, n_layers=3)
    assert model.attn_layers == [2]
    assert build_backbone("dc_hybrid", d_model=16, n_layers=3, attn_layers=[0]).attn_layers == [0]
    assert DecisionConvFormer(d_model=16, n_layers=3).attn_layers == []
    with pytest.raises(ValueError, match="attn_layers"):
        DecisionConvFormer(d_model=16, n_layers=2, attn_layers=[2])
    with pytest.raises(ValueError, match="attn_layers"):
        DecisionConvFormer(d_model=16, n_layers=2, attn_layers="first")
    with pytest.raises(ValueError, match="fusion must be"):
        MambaDM(d_model=16, fusion="concat")
    with pytest.raises(ValueError, match="local_window"):
        MambaDM(d_model=16, local_window=0)


def test_gate_starts_as_the_average_of_both_branches():
    block = MambaDM(d_model=8, n_layers=1, fusion="gate").layers[0]
    g, loc = torch.randn(3, 8), torch.randn(3, 8)
    torch.testing.assert_close(block.fuse(g, loc), (g + loc) / 2)


def test_dc_uses_separate_return_state_action_filters_by_default():
    # The DC paper's R, s, a filters: three filter banks unless a config asks for another period.
    model = DecisionConvFormer(d_model=8, n_layers=1)
    assert model.blocks[0].mixer.weight.shape == (3, 8, 6)
    assert DecisionConvFormer(d_model=8, n_layers=1, token_types=1).blocks[0].mixer.weight.shape == (1, 8, 6)
