"""The plugin's own tests: lit-seqrl's conformance suite plus the scan against its recurrence."""

from __future__ import annotations

import torch
from lit_seqrl_lru import LRUBackbone, linear_scan

from lit_seqrl.testing import check_backbone


def test_conformance():
    torch.manual_seed(0)
    check_backbone(LRUBackbone(d_model=16, n_layers=2, d_state=8, dropout=0.1))


def test_doubling_scan_equals_the_recurrence():
    torch.manual_seed(0)
    lam = torch.polar(torch.rand(5) * 0.99, torch.rand(5) * 6.28)  # (N,)
    b = torch.randn(2, 13, 5, dtype=torch.complex64)  # (B, L, N)
    x, expected = torch.zeros(2, 5, dtype=torch.complex64), []
    for k in range(13):
        x = lam * x + b[:, k]
        expected.append(x)
    torch.testing.assert_close(linear_scan(lam, b), torch.stack(expected, dim=1), rtol=1e-5, atol=1e-5)


def test_registered_through_the_entry_point():
    from lit_seqrl.registry import list_backbones

    entry = list_backbones()["lru"]
    assert entry.cls is LRUBackbone and entry.provider == "lit-seqrl-lru"
