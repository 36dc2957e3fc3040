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
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.evaluation.rollout import check_env_matches, run_episodes, summarize
from lit_seqrl.evaluation.scores import normalized_score


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
            raise ValueError("BCAgent is never return-conditioned; use DecisionAgent for that")
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
        env_id = env_id or self.spec.get("env_id")
        if not env_id:
            raise ValueError("this agent's data had no env id; pass env_id=... to evaluate it")
        mode = mode or self.hparams.eval_mode
        check_env_matches(env_id, self.spec["obs_dim"], self.spec["act_dim"], self.spec["discrete"])
        was_training = self.training
        self.eval()
        try:
            policy = DecisionPolicy(self, target_return=0.0, mode=mode)  # the return is never embedded
            stats = summarize(run_episodes(env_id, policy, episodes, num_envs, seed, progress=progress))
        finally:
            self.train(was_training)
        stats["normalized_score"] = normalized_score(
            stats["return_mean"], self.spec.get("ref_min_score"), self.spec.get("ref_max_score")
        )
        dataset_target = (self.spec.get("target_returns") or [None])[0]
        row = {"target_return": None if dataset_target is None else float(dataset_target), **stats}
        return {
            "episodes": episodes,
            "mode": mode,
            "env_id": env_id,
            "return_conditioned": False,
            "results": [row],
        }
