"""Agents: LightningModules that embed tokens, run a backbone and train a policy."""

from lit_seqrl.agents.base import SeqRLAgent, load_agent
from lit_seqrl.agents.bc import BCAgent
from lit_seqrl.agents.decision import DecisionAgent
from lit_seqrl.agents.dtqn import DTQNAgent

__all__ = ["BCAgent", "DTQNAgent", "DecisionAgent", "SeqRLAgent", "load_agent"]
