"""What every lit-seqrl agent shares: checkpoints that rebuild themselves, evaluation, optimiser groups."""

from __future__ import annotations

import importlib
import math
from typing import Any

import lightning as L
import torch
from torch import nn

from lit_seqrl.errors import ConfigError, MissingInputError

CKPT_KEY = "lit_seqrl_agent"  # class path of the agent that wrote a checkpoint


class SeqRLAgent(L.LightningModule):
    """Base class of lit-seqrl agents.

    Subclasses implement :meth:`evaluate_policy`, which ``lit-seqrl evaluate`` calls on a
    checkpoint alone, so everything it needs must live in the hyper-parameters or buffers.
    """

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    def on_train_epoch_start(self) -> None:
        # Window datasets draw item i of epoch e from (seed, e, i): tell them the epoch, so every
        # epoch sees new windows and a resumed run sees the same ones as an uninterrupted run.
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def evaluate_policy(
        self, episodes: int, num_envs: int = 8, seed: int = 0, **kwargs: Any
    ) -> dict[str, Any]:
        """Roll the policy out; return ``{"episodes": N, "mode": ..., "results": [{...}, ...]}``."""
        raise NotImplementedError


def load_agent(
    ckpt_path: str, expected: type[SeqRLAgent] | None = None, map_location: str = "cpu"
) -> SeqRLAgent:
    """Rebuild the agent stored in a lit-seqrl checkpoint, whatever its class.

    Raises ``ValueError`` with both class names when ``expected`` is given and the checkpoint
    holds another agent class, and when the file is not a lit-seqrl checkpoint.
    """
    try:
        ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise MissingInputError(f"checkpoint not found: {ckpt_path}") from None
    except Exception as err:
        raise ConfigError(f"cannot read checkpoint {ckpt_path}: {err}") from err
    path = ckpt.get(CKPT_KEY) if isinstance(ckpt, dict) else None
    if path is None:
        raise ConfigError(f"{ckpt_path} is not a lit-seqrl agent checkpoint (no {CKPT_KEY!r} entry)")
    module_name, _, cls_name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    if expected is not None and not issubclass(cls, expected):
        raise ConfigError(f"checkpoint {ckpt_path} holds a {cls_name}, not a {expected.__name__}")
    agent = cls.load_from_checkpoint(ckpt_path, map_location=map_location)
    agent.eval()
    return agent


_NO_DECAY_MODULES = (nn.LayerNorm, nn.Embedding, nn.GroupNorm, nn.BatchNorm1d, nn.RMSNorm)


_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def adamw(
    groups: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.AdamW:
    """AdamW over ``groups``, fused into one kernel per step where the parameters allow it.

    The fused kernel makes a DT step faster (``benchmarks/vs_peers.py --experiments``, numbers in
    benchmarks/README.md); it needs real floating parameters (not S4's complex ones) on CPU or CUDA.
    """
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(
        p.dtype in _FUSED_DTYPES and p.device.type in ("cpu", "cuda") for p in params
    )
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def lr_factor(step: int, warmup: int, total: int | None = None, final: float = 0.1) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based).

    Linear warm-up to 1 over ``warmup`` steps; then constant (``total`` None) or a cosine decay
    that reaches ``final`` at step ``total`` and stays there (DT's Atari schedule decays to 10%).
    """
    warm = min(1.0, (step + 1) / max(1, warmup))
    if total is None or step < warmup:
        return warm
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(module: nn.Module, weight_decay: float, lr: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay on weight matrices only, plus the backbone's own marks.

    Biases, norms and embeddings get no weight decay (the usual rule); a parameter marked with
    ``lit_seqrl.backbones.mark_parameters`` gets the weight decay / learning-rate scale / cap it asked for.
    """
    no_decay: set[int] = set()
    for sub in module.modules():
        if isinstance(sub, _NO_DECAY_MODULES) or "norm" in type(sub).__name__.lower():
            no_decay.update(id(p) for p in sub.parameters(recurse=False))
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        marks = getattr(p, "_optim", {})
        default_wd = 0.0 if (id(p) in no_decay or p.dim() < 2 or name.endswith("bias")) else weight_decay
        group_lr = min(lr * marks.get("lr_scale", 1.0), marks.get("lr_max", float("inf")))
        key = (marks.get("weight_decay", default_wd), group_lr)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": group_lr} for (wd, group_lr), ps in groups.items()]
