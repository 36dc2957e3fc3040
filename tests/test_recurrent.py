"""LSTM / GRU backbones and the DTQN transformer block pass the backbone conformance suite."""

from __future__ import annotations

import pytest
import torch

from lit_seqrl.backbones.dtqn_transformer import DTQNTransformer
from lit_seqrl.backbones.recurrent import GRUBackbone, LSTMBackbone
from lit_seqrl.registry import build_backbone
from lit_seqrl.testing import check_backbone


@pytest.mark.parametrize("cls", [LSTMBackbone, GRUBackbone])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_recurrent_conformance(cls: type, n_layers: int) -> None:
    check_backbone(cls(d_model=16, n_layers=n_layers, dropout=0.1))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_registry_builds_recurrent_backbones_with_batch_first_state(name: str) -> None:
    backbone = build_backbone(name, d_model=8, n_layers=3)
    state = backbone.init_state(5)
    assert all(t.shape == (5, 3, 8) for t in state.values())
    _, new_state = backbone.step(torch.randn(5, 8), state)
    assert all(t.shape == (5, 3, 8) for t in new_state.values())


@pytest.mark.parametrize("cls", [LSTMBackbone, GRUBackbone])
def test_padding_never_enters_the_recurrence(cls: type) -> None:
    torch.manual_seed(0)
    backbone = cls(d_model=8).eval()
    x = torch.randn(2, 7, 8)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    y = backbone(x, mask)
    torch.testing.assert_close(y[0, 2:], backbone(x[:1, 2:])[0])  # left padding
    torch.testing.assert_close(y[1, :5], backbone(x[1:, :5])[0])  # right padding
    assert (y[~mask] == 0).all()


@pytest.mark.parametrize("gate", ["residual", "gru"])
@pytest.mark.parametrize("identity_map_reordering", [False, True])
def test_dtqn_transformer_conformance(gate: str, identity_map_reordering: bool) -> None:
    backbone = DTQNTransformer(
        d_model=16,
        n_layers=2,
        n_heads=4,
        dropout=0.1,
        gate=gate,
        identity_map_reordering=identity_map_reordering,
        max_seq_len=16,
    )
    check_backbone(backbone)


def test_dtqn_transformer_cache_limit() -> None:
    backbone = DTQNTransformer(d_model=8, n_layers=1, n_heads=2, max_seq_len=2)
    state = backbone.init_state(1)
    for _ in range(2):
        _, state = backbone.step(torch.randn(1, 8), state)
    with pytest.raises(ValueError, match="max_seq_len"):  # the shared attention's error, as every stack
        backbone.step(torch.randn(1, 8), state)
    with pytest.raises(ValueError):
        DTQNTransformer(d_model=8, gate="lstm")
