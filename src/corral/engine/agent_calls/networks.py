"""Calls of networks (``corral.agent_api.networks``)."""

from __future__ import annotations

from corral.engine.agent_calls import AgentCalls


class NetworkCalls(AgentCalls):
    pass
