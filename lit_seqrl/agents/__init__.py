"""Agents: LightningModules that embed tokens, run a backbone and train a policy."""

from lit_seqrl.agents.base import SeqRLAgent, load_agent
from lit_seqrl.agents.decision import DecisionAgent

__all__ = ["DecisionAgent", "SeqRLAgent", "load_agent"]
