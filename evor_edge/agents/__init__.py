"""Agents: EVOR (flow BC actor + flow-based TD reward-to-go model) and the QC-1 baseline."""

from evor_edge.agents.common import AgentSpec, BaseAgent
from evor_edge.agents.evor import EvorAgent
from evor_edge.agents.qc import QCAgent


def make_agent(spec: AgentSpec) -> BaseAgent:
    """Build the agent named by spec.config.agent."""
    if spec.config.agent == "evor":
        return EvorAgent(spec)
    if spec.config.agent == "qc":
        return QCAgent(spec)
    raise ValueError(f"unknown agent {spec.config.agent!r}")


__all__ = ["AgentSpec", "BaseAgent", "EvorAgent", "QCAgent", "make_agent"]
