"""Calls of images (``corral.agent_api.images``)."""

from __future__ import annotations

from corral.engine.agent_calls import AgentCalls


class ImageCalls(AgentCalls):
    pass
