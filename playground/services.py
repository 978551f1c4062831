"""Starting a session from the playground: what a client does over REST, in one call."""

from __future__ import annotations

from django.db import transaction

from agents.chunks import HIGH, USER_REQUESTED
from agents.services import agent_switch
from sessions.models import AgentSession
from sessions.services import session_create


def session_start(*, session_id: str | None, title: str, agent: str) -> AgentSession:
    """``POST /sessions``, then ``POST /agents/{id}/switch`` when the chosen agent is not the
    one a session starts with; both or neither."""
    with transaction.atomic():
        session = session_create(session_id=session_id, title=title)
        agent_switch(session=session, to_agent=agent, reason=USER_REQUESTED, confidence=HIGH)
    return session
