"""Roll out any policy into a minari dataset: one of our checkpoints or a Python callable.

``--policy`` strings name the policy:

* ``ckpt:PATH`` — a lit-seqrl :class:`~lit_seqrl.agents.DecisionAgent` (or ``BCAgent``) checkpoint,
  acting through :class:`~lit_seqrl.agents.decision_policy.DecisionPolicy` on one env, conditioned
  on ``target_return`` (default: the checkpoint's first target);
* ``module:function`` or ``path/to/file.py:function`` — a function mapping one observation to
  one action (an int for Discrete spaces, an array for Box).

Exploration (``action_noise``, ``epsilon``) is applied by :func:`rollout_policy` on top of the
policy's action; a sequence policy keeps conditioning on the action it chose.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lit_seqrl.agents.base import load_agent
from lit_seqrl.agents.decision import DecisionAgent
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.data.collect import rollout_policy
from lit_seqrl.data.episodes import OfflineDataset, load_offline_dataset
from lit_seqrl.data.progress import progress_bar
from lit_seqrl.data.store import write_dataset
from lit_seqrl.errors import ConfigError, MissingInputError

__all__ = ["CheckpointPolicy", "collect_with_policy", "load_policy"]


class CheckpointPolicy(DecisionPolicy):
    """A trained sequence agent's :class:`DecisionPolicy`, with the defaults of its checkpoint:
    its first target return, its eval mode, and its env (``env_id``).

    :func:`rollout_policy` drives it as evaluation does (reset, act, observe the reward), so the
    agent sees its episode as it did in evaluation.
    """

    def __init__(
        self, agent: DecisionAgent, target_return: float | None = None, mode: str | None = None
    ) -> None:
        if not isinstance(agent, DecisionAgent):
            raise ConfigError(
                f"--policy ckpt: needs a DecisionAgent/BCAgent checkpoint, got a {type(agent).__name__}"
            )
        target = agent.default_target_returns()[0] if target_return is None else float(target_return)
        super().__init__(agent, target_return=target, mode=mode or agent.hparams.eval_mode)
        self.target_return = target
        self.env_id: str | None = agent.spec.get("env_id")


def _load_callable(spec: str) -> Callable[[np.ndarray], Any]:
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"--policy must be 'ckpt:PATH', 'module:function' or 'file.py:function', got {spec!r}"
        )
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise MissingInputError(f"policy file not found: {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            raise ConfigError(f"cannot import policy module {module_name!r}: {err}") from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{module_name!r} has no callable {attr!r}")
    return fn


def load_policy(
    spec: str, target_return: float | None = None, mode: str | None = None, device: str = "cpu"
) -> CheckpointPolicy | Callable[[np.ndarray], Any]:
    """The policy named by ``spec`` (see the module docstring)."""
    if spec.startswith("ckpt:"):
        return CheckpointPolicy(load_agent(spec[len("ckpt:") :], map_location=device), target_return, mode)
    if target_return is not None:
        raise ConfigError("--target_return applies to ckpt: policies only")
    return _load_callable(spec)


def collect_with_policy(
    policy: str,
    dataset_id: str,
    env_id: str | None = None,
    episodes: int = 100,
    seed: int = 0,
    action_noise: float = 0.0,
    epsilon: float = 0.0,
    target_return: float | None = None,
    mode: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> OfflineDataset:
    """Roll ``policy`` out for ``episodes`` episodes (episode i resets with ``seed + i``) on
    ``env_id`` (default: a checkpoint's own env) and store them as minari dataset ``dataset_id``."""
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0 or action_noise < 0:
        raise ConfigError(f"need 0 <= epsilon <= 1 and action_noise >= 0, got {epsilon} and {action_noise}")
    fn = load_policy(policy, target_return=target_return, mode=mode)
    env_id = env_id or getattr(fn, "env_id", None)
    if not env_id:
        raise ConfigError("--env is required for a callable policy (a gymnasium env id)")
    with progress_bar(f"Rolling out {policy}", episodes, enabled=progress) as advance:
        eps = rollout_policy(
            env_id, fn, episodes, seed, action_noise=action_noise, epsilon=epsilon, on_episode=advance
        )
    what = f"target return {fn.target_return:g}, " if isinstance(fn, CheckpointPolicy) else ""
    write_dataset(
        dataset_id,
        eps,
        env_id,
        description=f"{env_id}: {episodes} episodes of {policy} ({what}action_noise {action_noise}, "
        f"epsilon {epsilon}, seeds {seed}..{seed + episodes - 1})",
        algorithm_name=policy,
        overwrite=overwrite,
    )
    return load_offline_dataset(dataset_id)
