"""Behaviour cloning with the sequence machinery of :class:`DecisionAgent`, without return tokens.

BC is the Decision Transformer paper's baseline: the same backbone, embeddings, windows and
action head, trained to imitate every action in the data. %BC is BC on the top X% of episodes by
return: ``OfflineTrajectoryDataModule(top_fraction=X)`` selects them, so %BC needs no class of its
own. Both work with any registered backbone and token layout.
"""

from __future__ import annotations

from typing import Any

import torch

from lit_seqrl.agents.decision import DecisionAgent, EvalMode
from lit_seqrl.errors import ConfigError


class BCAgent(DecisionAgent):
    """A :class:`DecisionAgent` with ``return_conditioned=False`` fixed; same keyword arguments,
    less ``return_conditioned`` and ``target_returns``.

    Evaluation reports a single row whatever target returns are asked for, since the policy
    ignores them; its ``target_return`` is the data's default (the best return in the training
    episodes) so tables and logs line up with DT's, and the report says ``"return_conditioned":
    false``.
    """

    def __init__(self, **kwargs: Any) -> None:
        # Every DecisionAgent argument is forwarded (LightningCLI reads them through this call),
        # except the two that BC fixes. A checkpoint's saved hyper-parameters hold both, so they
        # are accepted here when they agree.
        if kwargs.pop("return_conditioned", False):
            raise ConfigError("BCAgent is never return-conditioned; use DecisionAgent for that")
        kwargs.pop("target_returns", None)
        super().__init__(return_conditioned=False, **kwargs)

    @torch.no_grad()
    def evaluate_policy(
        self,
        episodes: int = 10,
        num_envs: int = 10,
        seed: int = 0,
        target_returns: list[float] | None = None,
        mode: EvalMode | None = None,
        progress: bool = False,
        env_id: str | None = None,
    ) -> dict[str, Any]:
        """Unconditioned rollouts: one row of results (``target_returns`` is accepted and ignored)."""
        report = self._rollouts([0.0], episodes, num_envs, seed, mode, progress, env_id)  # 0: never embedded
        dataset_target = (self.spec.get("target_returns") or [None])[0]
        report["results"][0]["target_return"] = None if dataset_target is None else float(dataset_target)
        report["return_conditioned"] = False
        return report
