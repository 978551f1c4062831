"""Session workflows: create, delete, append to the history, record audit events."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from agent_runtime.errors import ApplicationError, Conflict, NotFound
from sessions import locks, rows
from sessions.models import AgentSession, AuditEvent, Message
from sessions.selectors import sessions_to_purge
from sessions.signals import session_created, session_deleting

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
TITLE_MAX_CHARS = 200


def validate_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not SESSION_ID_RE.fullmatch(session_id):
        raise ApplicationError(
            "session_id must be 1-64 characters of letters, digits, '_', '.', ':' or '-'."
        )
    return session_id


def validate_session_id_or_404(session_id: str) -> None:
    """An id that cannot exist is simply not found."""
    if not isinstance(session_id, str) or not SESSION_ID_RE.fullmatch(session_id):
        raise NotFound(f"session {session_id!r} not found")


def session_get(*, session_id: str) -> AgentSession:
    """The live session with this id, with its agent context; 404 otherwise."""
    validate_session_id_or_404(session_id)
    try:
        return AgentSession.objects.live().select_related("agent_context").get(pk=session_id)
    except AgentSession.DoesNotExist:
        raise NotFound(f"session {session_id!r} not found") from None


def audit_record(
    *,
    event_type: str,
    session_id: str = "",
    agent: str = "",
    correlation_id: str = "",
    **data: Any,
) -> AuditEvent:
    return rows.insert(
        AuditEvent,
        event_type=event_type,
        session_id=session_id,
        agent=agent,
        correlation_id=correlation_id,
        data=data,
    )


def session_create(*, session_id: str | None = None, title: str = "") -> AgentSession:
    if session_id is None:
        session_id = str(uuid.uuid4())
    validate_session_id(session_id)
    if len(title) > TITLE_MAX_CHARS:
        raise ApplicationError(f"title must be at most {TITLE_MAX_CHARS} characters.")
    now = timezone.now()
    try:
        with transaction.atomic():
            session = AgentSession.objects.create(
                id=session_id, title=title, created_at=now, last_activity=now
            )
            session_created.send(sender=AgentSession, session=session, now=now)
            audit_record(event_type=AuditEvent.Type.SESSION_CREATED, session_id=session_id)
    except IntegrityError:
        raise Conflict(f"session {session_id!r} already exists") from None
    return session


def session_delete(*, session: AgentSession) -> None:
    """Soft delete: gone from the API at once, rows kept for audit until the purge.

    Open tool calls and pending approvals are closed, so nobody is asked to decide them.
    """
    with transaction.atomic():
        session_deleting.send(sender=AgentSession, session_id=session.pk)
        AgentSession.objects.filter(pk=session.pk).update(
            deleted_at=timezone.now(), is_active=False
        )
        audit_record(event_type=AuditEvent.Type.SESSION_DELETED, session_id=session.pk)


def message_append(
    *,
    session: AgentSession | str,
    role: str,
    content: str = "",
    tool_calls: list[dict[str, Any]] | None = None,
    tool_call_id: str = "",
    name: str = "",
    agent: str = "",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    usage_estimated: bool = False,
    finish_reason: str = "",
) -> Message:
    """Append one message: one INSERT, plus the session's counters; history is never rewritten.

    The counter's UPDATE locks the session row and returns the new seq, so two writers cannot
    take the same one; inside a turn the owner it returns also proves the turn still holds its
    lease (sessions.locks). Two statements, built once (sessions.rows): this runs several
    times in every turn.
    """
    session_id = session if isinstance(session, str) else session.pk
    now = timezone.now()
    # The first user message becomes the title, on one line.
    title = " ".join(content.split())[:TITLE_MAX_CHARS] if role == Message.Role.USER else ""
    # Inside a caller's transaction no savepoint: a failure here fails the caller's whole.
    with transaction.atomic(savepoint=False):
        # Takes the row's lock as SELECT ... FOR UPDATE would, and hands back the seq.
        now_stored = rows.db_value(AgentSession, "last_activity", now)
        counted = rows.select(_BUMP, [now_stored, title, session_id])
        if not counted:
            raise NotFound(f"session {session_id!r} not found")
        seq, turn_owner = counted[0]
        locks.fence_owner_ok(turn_owner)  # a turn that lost its lease writes nothing
        return rows.insert(
            Message,
            session_id=session_id,
            seq=seq,
            role=role,
            content=content or "",
            tool_calls=tool_calls or None,
            tool_call_id=tool_call_id,
            name=name,
            agent=agent,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            usage_estimated=usage_estimated,
            finish_reason=finish_reason,
            created_at=now,
        )


# The title is set once: by the first user message (others pass "", which changes nothing).
_BUMP = (
    'UPDATE "agent_sessions_agentsession" SET "message_count" = "message_count" + 1,'
    ' "last_activity" = %s, "title" = CASE WHEN "title" = \'\' THEN %s ELSE "title" END'
    ' WHERE "id" = %s RETURNING "message_count", "turn_owner"'
)


def sessions_purge(*, older_than_days: int, for_real: bool) -> int:
    """Delete soft-deleted sessions (and inactive ones past retention) for good."""
    doomed = sessions_to_purge(older_than_days=older_than_days)
    count = doomed.count()
    if for_real and count:
        doomed.delete()
    return count
