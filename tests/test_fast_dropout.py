"""ops.dropout / ops.attention: the cheap CPU masks keep dropout's statistics and SDPA's math."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_seqrl.backbones.layers import Dropout
from lit_seqrl.ops.attention import attention
from lit_seqrl.ops.dropout import dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_drops_at_rate_p_and_is_unbiased(p):
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of 4: the last draw is partly used
    m = keep_mask((n,), p)
    dropped = round(p * 65536) / 65536  # the rounded probability the scale is built from
    rate = (m == 0).float().mean().item()
    assert abs(rate - dropped) < 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma of a binomial rate
    assert torch.allclose(m[m != 0], torch.tensor(1 / (1 - dropped)))
    assert abs(m.mean().item() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)  # E[mask] = 1


def test_mask_bits_are_independent_across_neighbours():
    # Four decisions come from one 64-bit draw: adjacent ones must not be correlated.
    torch.manual_seed(1)
    keep = keep_mask((400_000,), 0.5) > 0
    a, b = keep[:-1].float(), keep[1:].float()
    corr = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
    assert abs(corr.item()) < 5 / math.sqrt(keep.numel())


def test_dropout_contract_matches_functional_dropout():
    x = torch.randn(3, 7, 5)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x)) and torch.equal(
        F.dropout(x, 1.0), torch.zeros_like(x)
    )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropout(x, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropout(x, -0.1)


def test_dropout_is_seeded_and_its_gradient_is_the_mask():
    x = torch.randn(4, 9, 16, requires_grad=True)
    torch.manual_seed(5)
    y = dropout(x, 0.25)
    torch.manual_seed(5)
    again = dropout(x, 0.25)
    assert torch.equal(y, again)
    torch.manual_seed(5)
    mask = keep_mask(x.shape, 0.25)
    assert torch.equal(y, x * mask)
    assert not torch.equal(dropout(x, 0.25), y)  # a new draw
    y.sum().backward()
    assert torch.equal(x.grad, mask)


def test_dropout_module_follows_train_and_eval():
    layer = Dropout(0.5)
    x = torch.ones(1000)
    assert (layer(x) == 0).any()
    layer.eval()
    assert layer(x) is x
    assert "p=0.5" in repr(layer)


def _qkv(B=3, H=2, L=7, E=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, L, E, generator=g) for _ in range(3))


@pytest.mark.parametrize("causal", [True, False])
def test_attention_without_dropout_is_sdpa(causal):
    q, k, v = _qkv()
    mask = None if causal else torch.rand(3, 1, 7, 7, generator=torch.Generator().manual_seed(2)) > 0.3
    if mask is not None:
        mask |= torch.eye(7, dtype=torch.bool)  # no query without keys
    got = attention(q, k, v, attn_mask=mask, is_causal=causal)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_dropout_is_softmax_times_the_same_mask(causal):
    q, k, v = _qkv(L=6)
    mask = None if causal else torch.ones(6, 6, dtype=torch.bool).triu()  # anti-causal, every row non-empty
    torch.manual_seed(3)
    got = attention(q, k, v, attn_mask=mask, dropout_p=0.2, is_causal=causal)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril() if causal else mask
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~allowed, float("-inf"))
    torch.manual_seed(3)
    want = (scores.softmax(-1) * keep_mask(scores.shape, 0.2)) @ v
    torch.testing.assert_close(got, want)


def test_attention_dropout_averages_to_sdpa():
    q, k, v = _qkv(B=1, H=1, L=5, E=4)
    torch.manual_seed(4)
    mean = torch.stack([attention(q, k, v, dropout_p=0.3, is_causal=True) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(
        mean, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=0.05, rtol=0
    )


def test_attention_rejects_float_masks():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="boolean"):
        attention(q, k, v, attn_mask=torch.zeros(7, 7), dropout_p=0.1)
