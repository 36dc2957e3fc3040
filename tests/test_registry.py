"""Backbone registry: entry-point discovery, plugins that fail, in-process registration."""

from __future__ import annotations

import re
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from lit_seqrl import registry
from lit_seqrl.backbones import Backbone
from lit_seqrl.backbones.transformer import Transformer
from lit_seqrl.errors import ConfigError
from lit_seqrl.registry import UnknownBackboneError, build_backbone, list_backbones, register_backbone
from lit_seqrl.testing import check_backbone

PLUGIN = '''
import torch
from torch import nn
from lit_seqrl.backbones import Backbone
from lit_seqrl.backbones.transformer import Transformer

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
    _fake_distribution(
        tmp_path,
        "squatter_plugin",
        "squatter_plugin",
        PLUGIN.replace("CumMean", "Squatter"),
        "transformer = squatter_plugin:Squatter",
    )
    _fake_distribution(
        tmp_path, "notabackbone_plugin", "notabackbone_plugin", "class Thing:\n    pass\n",
        "thing = notabackbone_plugin:Thing",
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    yield tmp_path
    registry.refresh()
    for mod in ("cummean_plugin", "broken_plugin", "squatter_plugin", "notabackbone_plugin"):
        sys.modules.pop(mod, None)


def test_builtin_transformer_is_registered_in_process():
    entry = list_backbones()["transformer"]
    assert entry.provider == "lit-seqrl"
    assert entry.cls is Transformer


def test_builtins_need_no_package_metadata(monkeypatch):
    """A source checkout that was never pip-installed still knows every built-in backbone."""
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    registry.refresh()
    try:
        entries = list_backbones()
        assert set(registry.BUILTINS) <= set(entries)
        assert {entries[name].provider for name in registry.BUILTINS} == {"lit-seqrl"}
        assert isinstance(build_backbone("transformer", d_model=8, n_layers=1), Transformer)
    finally:
        monkeypatch.undo()
        registry.refresh()


def test_plugin_named_like_a_builtin_is_skipped_with_a_warning_naming_it(plugin_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entries = list_backbones()
    assert any(re.search(r"'transformer' from squatter_plugin.*built-in", str(w.message)) for w in caught)
    assert entries["transformer"].cls is Transformer and entries["transformer"].provider == "lit-seqrl"
    assert isinstance(build_backbone("transformer", d_model=8, n_layers=1), Transformer)


def test_entry_point_that_is_not_a_backbone_is_skipped_and_named_when_asked_for(plugin_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entries = list_backbones()
    assert any(
        re.search(r"'thing' from notabackbone_plugin.*not a lit_seqrl Backbone", str(w.message))
        for w in caught
    )
    assert "thing" not in entries and "cummean" in entries
    with pytest.raises(
        UnknownBackboneError,
        match=r"unknown backbone 'thing' \(its plugin was skipped: .*not a lit_seqrl Backbone",
    ):
        build_backbone("thing", d_model=8)


def test_register_backbone_cannot_take_a_builtin_name_and_unregisters():
    class Mine(Backbone):
        def forward(self, x, mask=None):
            return x

    with pytest.raises(ValueError, match="built-in backbone"):
        register_backbone("mamba")(Mine)
    assert list_backbones()["mamba"].provider == "lit-seqrl"
    register_backbone("mine_test")(Mine)
    assert list_backbones()["mine_test"].cls is Mine
    registry.unregister_backbone("mine_test")
    assert "mine_test" not in list_backbones()
    with pytest.raises(KeyError, match="mine_test"):
        registry.unregister_backbone("mine_test")


def test_third_party_plugin_is_discovered_and_broken_one_skipped_with_one_warning(plugin_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entries = list_backbones()
        assert len(caught) == 3  # broken, squatter, not-a-backbone: one warning each
        list_backbones()  # a second lookup must not warn again
    assert entries["cummean"].provider == "cummean_plugin"
    assert "broken" not in entries and "transformer" in entries
    broken = [w for w in caught if "broken" in str(w.message)]
    assert len(broken) == 1
    assert "broken_plugin" in str(broken[0].message) and "needs a GPU library" in str(broken[0].message)
    backbone = build_backbone("cummean", d_model=8, scale=2.0)
    check_backbone(backbone)
    with pytest.raises(UnknownBackboneError, match="plugin was skipped: import failed"):
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
        registry.unregister_backbone("identity_test")

    with pytest.raises(TypeError, match="expects a Backbone subclass"):
        register_backbone("bad")(int)


def test_a_type_error_inside_a_backbone_constructor_is_a_bug_not_bad_options():
    """Options the constructor does not take are bad input; a TypeError raised inside it is not."""

    @register_backbone("buggy_test")
    class Buggy(Backbone):
        def __init__(self, d_model: int, gain: float = 1.0) -> None:
            super().__init__(d_model)
            self.width = len(gain)  # the bug: a float has no len()

    try:
        with pytest.raises(TypeError, match="has no len") as info:
            build_backbone("buggy_test", d_model=4, gain=2.0)
        assert not isinstance(info.value, ConfigError) and "cannot build backbone" not in str(info.value)
        with pytest.raises(ConfigError, match="cannot build backbone 'buggy_test'"):
            build_backbone("buggy_test", d_model=4, n_heads=2)
    finally:
        registry.unregister_backbone("buggy_test")


def test_backbones_command_lists_builtins_and_plugins_with_their_provider(plugin_path, capsys):
    from lit_seqrl.cli import run_backbones

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_backbones([])
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["mamba"][0] == "lit-seqrl" and rows["cummean"][0] == "cummean_plugin"
    assert rows["transformer"] == ["lit-seqrl", "lit_seqrl.backbones.transformer.Transformer"]
