"""Behaviour cloning with the sequence machinery of :class:`DecisionAgent`, without return tokens.

BC is the Decision Transformer paper's baseline: the same backbone, embeddings, windows and
action head, trained to imitate every action in the data. %BC is BC on the top X% of episodes by
return: ``OfflineTrajectoryDataModule(top_fraction=X)`` selects them, so %BC needs no class of its
own. Both work with any registered backbone and token layout.
"""

from __future__ import annotations

from typing import Any

from lit_seqrl.agents.decision import DecisionAgent
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
