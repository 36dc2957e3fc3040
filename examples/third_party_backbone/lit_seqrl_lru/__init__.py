"""lit-seqrl-lru: a Linear Recurrent Unit backbone, registered as ``lru`` through the
``lit_seqrl.backbones`` entry point (see this package's pyproject.toml)."""

from lit_seqrl_lru.lru import LRU, LRUBackbone, linear_scan

__all__ = ["LRU", "LRUBackbone", "linear_scan"]
