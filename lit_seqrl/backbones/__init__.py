"""Built-in sequence backbones. Import them through :func:`lit_seqrl.build_backbone`."""

from lit_seqrl.backbones.base import Backbone, Stack, State, mark_parameters

__all__ = ["Backbone", "Stack", "State", "mark_parameters"]
