"""Backbone registry: a table of built-ins, plus third-party plugins found through entry points.

Built-in backbones are listed in the table :data:`BUILTINS`, in-process, as timm keeps its
models: a source checkout that was never pip-installed, or a built-in added since the last
install, works without package metadata. Third-party
packages declare theirs in the ``lit_seqrl.backbones`` entry-point group; they are imported on
first use, and one that fails to import, or whose entry point is not a :class:`Backbone`
subclass, is skipped with a single warning naming it. A plugin cannot replace a built-in: one
that uses a built-in's name is skipped with a warning. ``register_backbone`` registers a class
in this process (notebooks, tests) and wins over plugins, but not over built-ins either.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import entry_points
from typing import Any, TypeVar

from lit_seqrl.backbones.base import Backbone
from lit_seqrl.backbones.conv import DecisionConvFormer
from lit_seqrl.backbones.dtqn_transformer import DTQNTransformer
from lit_seqrl.backbones.hippo_rnn import HippoRNN
from lit_seqrl.backbones.mamba import MambaBackbone
from lit_seqrl.backbones.mamba2 import Mamba2Backbone
from lit_seqrl.backbones.mambadm import MambaDM
from lit_seqrl.backbones.recurrent import GRUBackbone, LSTMBackbone
from lit_seqrl.backbones.s4 import S4Backbone
from lit_seqrl.backbones.s4d import S4DBackbone
from lit_seqrl.backbones.transformer import Transformer
from lit_seqrl.errors import ConfigError, ConfigTypeError

ENTRY_POINT_GROUP = "lit_seqrl.backbones"
BUILTIN_PROVIDER = "lit-seqrl"  # our distribution name: the provider shown for built-ins
IN_PROCESS_PROVIDER = "<in-process>"

# Add a new built-in backbone here: name -> class, or a variant of one that only changes defaults,
# as partial(cls, option=default).
BUILTINS: dict[str, type[Backbone] | partial[Backbone]] = {
    "transformer": Transformer,
    "mamba": MambaBackbone,
    "mamba2": Mamba2Backbone,
    "mamba2_hybrid": partial(Mamba2Backbone, attn_layers="middle"),
    "s4": S4Backbone,
    "s4d": S4DBackbone,
    "hippo_rnn": HippoRNN,
    "lstm": LSTMBackbone,
    "gru": GRUBackbone,
    "dc": DecisionConvFormer,
    "dc_hybrid": partial(DecisionConvFormer, attn_layers="last"),
    "mambadm": MambaDM,
    "dtqn_transformer": DTQNTransformer,
}

B = TypeVar("B", bound=type[Backbone])


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    cls: type[Backbone]
    provider: str  # distribution name: "lit-seqrl" for built-ins, "<in-process>" for register_backbone
    defaults: dict[str, Any] = field(default_factory=dict)  # a variant's options, overridable

    @classmethod
    def builtin(cls, name: str, spec: type[Backbone] | partial[Backbone]) -> BackboneEntry:
        if isinstance(spec, partial):
            return cls(name, spec.func, BUILTIN_PROVIDER, dict(spec.keywords))  # type: ignore[arg-type]
        return cls(name, spec, BUILTIN_PROVIDER)


_registered: dict[str, BackboneEntry] = {}  # in-process registrations win over plugins
_discovered: dict[str, BackboneEntry] | None = None
_skipped: dict[str, str] = {}  # plugin name -> why it was skipped, warned once


class UnknownBackboneError(ConfigError, KeyError):
    """Raised for a backbone name no installed package provides (a ``KeyError`` too, as before)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register_backbone(name: str) -> Callable[[B], B]:
    """Class decorator registering a backbone in this process (notebooks, tests).

    Registering a name again replaces the earlier class; a built-in's name raises ``ValueError``.

    >>> @register_backbone("my_gru")
    ... class MyGRU(Backbone): ...
    """

    def wrap(cls: B) -> B:
        if not (isinstance(cls, type) and issubclass(cls, Backbone)):
            raise TypeError(f"register_backbone({name!r}) expects a Backbone subclass, got {cls!r}")
        if name in BUILTINS:
            raise ValueError(
                f"{name!r} is the name of a built-in backbone; register yours under another name"
            )
        _registered[name] = BackboneEntry(name, cls, IN_PROCESS_PROVIDER)
        return cls

    return wrap


def unregister_backbone(name: str) -> None:
    """Forget an in-process registration (the undo of :func:`register_backbone`, for test fixtures)."""
    if name not in _registered:
        raise KeyError(f"no backbone {name!r} was registered in this process")
    del _registered[name]


def _skip(name: str, provider: str, value: str, why: str) -> None:
    if _skipped.get(name) != why:
        warnings.warn(
            f"lit_seqrl: skipping backbone plugin {name!r} from {provider} ({value}): {why}",
            RuntimeWarning,
            stacklevel=4,
        )
    _skipped[name] = why


def _discover() -> dict[str, BackboneEntry]:
    global _discovered
    if _discovered is not None:
        return _discovered
    found: dict[str, BackboneEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        provider = ep.dist.name if ep.dist is not None else "?"
        if provider == BUILTIN_PROVIDER or ep.name in found:
            # Our own metadata (an install of this package) only repeats the table; otherwise
            # the first installed distribution wins, as importlib orders them.
            continue
        if ep.name in BUILTINS:
            _skip(ep.name, provider, ep.value, "the name is taken by a built-in backbone; rename the plugin")
            continue
        try:
            cls = ep.load()
        except Exception as err:  # a broken plugin must not break everything else
            _skip(ep.name, provider, ep.value, f"import failed: {type(err).__name__}: {err}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, Backbone)):
            _skip(ep.name, provider, ep.value, f"{cls!r} is not a lit_seqrl Backbone subclass")
            continue
        found[ep.name] = BackboneEntry(ep.name, cls, provider)
    _discovered = found
    return found


def refresh() -> None:
    """Forget discovered plugins so the next lookup re-reads the entry points (after a pip install)."""
    global _discovered
    _discovered = None
    _skipped.clear()


def list_backbones() -> dict[str, BackboneEntry]:
    """All usable backbones by name, sorted: built-ins, plugins and in-process registrations."""
    builtins = {name: BackboneEntry.builtin(name, spec) for name, spec in BUILTINS.items()}
    entries = {**_discover(), **_registered, **builtins}
    return dict(sorted(entries.items()))


def get_backbone_entry(name: str) -> BackboneEntry:
    entries = list_backbones()
    if name not in entries:
        known = ", ".join(entries) or "none"
        hint = f" (its plugin was skipped: {_skipped[name]})" if name in _skipped else ""
        raise UnknownBackboneError(f"unknown backbone {name!r}{hint}; known backbones: {known}")
    return entries[name]


def get_backbone_class(name: str) -> type[Backbone]:
    return get_backbone_entry(name).cls


def build_backbone(name: str, d_model: int, strict: bool = True, **kwargs: Any) -> Backbone:
    """Build a registered backbone: ``build_backbone("mamba", d_model=128, n_layers=3)``.

    With ``strict=False``, keyword arguments the backbone's constructor does not accept are
    dropped with a warning (so a config written for one backbone can swap in another).
    """
    entry = get_backbone_entry(name)
    cls = entry.cls
    if not strict:
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            dropped = sorted(set(kwargs) - set(params))
            if dropped:
                warnings.warn(
                    f"backbone {name!r} does not take {dropped}; ignoring them", UserWarning, stacklevel=2
                )
            kwargs = {k: v for k, v in kwargs.items() if k in params}
    options = {**entry.defaults, **kwargs}
    try:  # the options are checked against the signature; a TypeError inside the constructor is a bug
        inspect.signature(cls).bind(d_model=d_model, **options)
    except TypeError as err:
        raise ConfigTypeError(f"cannot build backbone {name!r} with {kwargs}: {err}") from None
    return cls(d_model=d_model, **options)
