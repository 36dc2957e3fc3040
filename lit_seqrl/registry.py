"""Backbone registry: discovery through the ``lit_seqrl.backbones`` entry-point group.

Built-in backbones are declared in our own ``pyproject.toml`` under that group, exactly as a
third-party package declares its own, so there is one discovery path for everyone. Plugins are
imported on first use; one that fails to import is skipped with a single warning naming it.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

from lit_seqrl.backbones.base import Backbone

ENTRY_POINT_GROUP = "lit_seqrl.backbones"

B = TypeVar("B", bound=type[Backbone])


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    cls: type[Backbone]
    provider: str  # distribution name (or "<in-process>" for register_backbone)


_registered: dict[str, BackboneEntry] = {}  # in-process registrations win over entry points
_discovered: dict[str, BackboneEntry] | None = None
_failed: dict[str, str] = {}  # name -> error message, warned once


class UnknownBackboneError(KeyError):
    """Raised for a backbone name no installed package provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register_backbone(name: str) -> Callable[[B], B]:
    """Class decorator registering a backbone in this process (notebooks, tests).

    >>> @register_backbone("my_gru")
    ... class MyGRU(Backbone): ...
    """

    def wrap(cls: B) -> B:
        if not (isinstance(cls, type) and issubclass(cls, Backbone)):
            raise TypeError(f"register_backbone({name!r}) expects a Backbone subclass, got {cls!r}")
        _registered[name] = BackboneEntry(name, cls, "<in-process>")
        return cls

    return wrap


def _discover() -> dict[str, BackboneEntry]:
    global _discovered
    if _discovered is not None:
        return _discovered
    found: dict[str, BackboneEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue  # the first installed distribution wins, as importlib orders them
        provider = ep.dist.name if ep.dist is not None else "?"
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Backbone)):
                raise TypeError(f"{ep.value} is not a lit_seqrl Backbone subclass")
        except Exception as err:  # a broken plugin must not break everything else
            msg = f"{type(err).__name__}: {err}"
            if _failed.get(ep.name) != msg:
                warnings.warn(
                    f"lit_seqrl: skipping backbone plugin {ep.name!r} from {provider} ({ep.value}): {msg}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            _failed[ep.name] = msg
            continue
        found[ep.name] = BackboneEntry(ep.name, cls, provider)
    _discovered = found
    return found


def refresh() -> None:
    """Forget discovered plugins so the next lookup re-reads the entry points (after a pip install)."""
    global _discovered
    _discovered = None
    _failed.clear()


def list_backbones() -> dict[str, BackboneEntry]:
    """All usable backbones by name, sorted."""
    entries = {**_discover(), **_registered}
    return dict(sorted(entries.items()))


def get_backbone_class(name: str) -> type[Backbone]:
    entries = list_backbones()
    if name not in entries:
        known = ", ".join(entries) or "none"
        hint = f" (its plugin failed to import: {_failed[name]})" if name in _failed else ""
        raise UnknownBackboneError(f"unknown backbone {name!r}{hint}; known backbones: {known}")
    return entries[name].cls


def build_backbone(name: str, d_model: int, strict: bool = True, **kwargs: Any) -> Backbone:
    """Build a registered backbone: ``build_backbone("mamba", d_model=128, n_layers=3)``.

    With ``strict=False``, keyword arguments the backbone's constructor does not accept are
    dropped with a warning (so a config written for one backbone can swap in another).
    """
    cls = get_backbone_class(name)
    if not strict:
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            dropped = sorted(set(kwargs) - set(params))
            if dropped:
                warnings.warn(
                    f"backbone {name!r} does not take {dropped}; ignoring them", UserWarning, stacklevel=2
                )
            kwargs = {k: v for k, v in kwargs.items() if k in params}
    try:
        return cls(d_model=d_model, **kwargs)
    except TypeError as err:
        raise TypeError(f"cannot build backbone {name!r} with {kwargs}: {err}") from err
