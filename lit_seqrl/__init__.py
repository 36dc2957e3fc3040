"""lit-seqrl: reinforcement learning as sequence modelling on PyTorch Lightning."""

from lit_seqrl.registry import build_backbone, list_backbones, register_backbone, unregister_backbone

__version__ = "0.1.0"
__all__ = ["__version__", "build_backbone", "list_backbones", "register_backbone", "unregister_backbone"]
