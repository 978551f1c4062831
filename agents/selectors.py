"""Reads of the agents app for the REST endpoints."""

from __future__ import annotations

from agents.models import AgentSwitch
from sessions.models import AgentSession


def agent_switches(*, session: AgentSession) -> list[AgentSwitch]:
    """A session's switches, oldest first: GET /sessions/{id}/history's ``agent_history``."""
    return list(AgentSwitch.objects.filter(context__session=session))
