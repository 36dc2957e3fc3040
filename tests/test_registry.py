"""Backbone registry: entry-point discovery, plugins that fail, in-process registration."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from lit_seqrl import registry
from lit_seqrl.backbones import Backbone
from lit_seqrl.registry import UnknownBackboneError, build_backbone, list_backbones, register_backbone
from lit_seqrl.testing import check_backbone

PLUGIN = '''
import torch
from torch import nn
from lit_seqrl.backbones import Backbone

class CumMean(Backbone):
    """Causal running mean followed by a linear map: a tiny third-party backbone."""

    def __init__(self, d_model, scale=1.0):
        super().__init__(d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.scale = scale

    def forward(self, x, mask=None):
        n = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None]
        return self.proj(x.cumsum(1) / n) * self.scale

    def init_state(self, batch_size, device=None, dtype=None):
        return {"sum": torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),
                "n": torch.zeros(batch_size, 1, device=device, dtype=dtype)}

    def step(self, x_t, state):
        s, n = state["sum"] + x_t, state["n"] + 1
        return self.proj(s / n) * self.scale, {"sum": s, "n": n}
'''


def _fake_distribution(root: Path, dist: str, module: str, source: str, entries: str) -> None:
    info = root / f"{dist}-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(f"[lit_seqrl.backbones]\n{entries}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    _fake_distribution(
        tmp_path, "cummean_plugin", "cummean_plugin", PLUGIN, "cummean = cummean_plugin:CumMean"
    )
    _fake_distribution(
        tmp_path,
        "broken_plugin",
        "broken_plugin",
        "raise ImportError('needs a GPU library')",
        "broken = broken_plugin:Nope",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    yield tmp_path
    registry.refresh()
    for mod in ("cummean_plugin", "broken_plugin"):
        sys.modules.pop(mod, None)


def test_builtin_transformer_is_registered_through_entry_points():
    entry = list_backbones()["transformer"]
    assert entry.provider == "lit-seqrl"
    assert entry.cls.__name__ == "Transformer"


def test_third_party_plugin_is_discovered_and_broken_one_skipped_with_one_warning(plugin_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entries = list_backbones()
        list_backbones()  # a second lookup must not warn again
    assert entries["cummean"].provider == "cummean_plugin"
    assert "broken" not in entries and "transformer" in entries
    broken = [w for w in caught if "broken" in str(w.message)]
    assert len(broken) == 1
    assert "broken_plugin" in str(broken[0].message) and "needs a GPU library" in str(broken[0].message)
    backbone = build_backbone("cummean", d_model=8, scale=2.0)
    check_backbone(backbone)
    with pytest.raises(UnknownBackboneError, match="failed to import"):
        build_backbone("broken", d_model=8)


def test_unknown_backbone_lists_known_names():
    with pytest.raises(
        UnknownBackboneError, match=r"unknown backbone 'nope'.*known backbones: .*transformer"
    ):
        build_backbone("nope", d_model=8)


def test_register_backbone_decorator_and_non_strict_kwargs():
    @register_backbone("identity_test")
    class Identity(Backbone):
        def __init__(self, d_model: int, gain: float = 1.0) -> None:
            super().__init__(d_model)
            self.gain = torch.nn.Parameter(torch.tensor(gain))

        def forward(self, x, mask=None):
            return x * self.gain

    try:
        assert list_backbones()["identity_test"].provider == "<in-process>"
        with pytest.raises(TypeError, match="cannot build backbone 'identity_test'"):
            build_backbone("identity_test", d_model=4, n_heads=2)
        with pytest.warns(UserWarning, match=r"does not take \['n_heads'\]"):
            b = build_backbone("identity_test", d_model=4, strict=False, n_heads=2, gain=3.0)
        assert b.gain.item() == 3.0
    finally:
        registry._registered.pop("identity_test")

    with pytest.raises(TypeError, match="expects a Backbone subclass"):
        register_backbone("bad")(int)


def test_every_builtin_entry_point_imports():
    from importlib.metadata import entry_points

    ours = [
        ep
        for ep in entry_points(group=registry.ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.dist.name == "lit-seqrl"
    ]
    assert len(ours) >= 9
    registry.refresh()
    entries = list_backbones()
    broken = {ep.name: registry._failed.get(ep.name) for ep in ours if ep.name not in entries}
    assert not broken, f"built-in backbones failed to import: {broken}"
