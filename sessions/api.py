"""REST endpoints for sessions, their history and the events (PROTOCOL §2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from agent_runtime.errors import NotFound
from agent_runtime.rest import StrictCharField, StrictSerializer, body
from agents.selectors import agent_switches
from sessions import selectors, services
from sessions.models import AgentSession, AuditEvent

if TYPE_CHECKING:
    pass


def current_agent(session: AgentSession) -> str | None:
    context = getattr(session, "agent_context", None)
    return context.current_agent if context else None


def session_summary(session: AgentSession) -> dict[str, Any]:
    return {
        "id": session.id,
        "title": session.title,
        "message_count": session.message_count,
        "last_activity": session.last_activity.isoformat(),
        "is_active": session.is_active,
        "current_agent": current_agent(session),
        "created_at": session.created_at.isoformat(),
    }


class SessionCreateInput(StrictSerializer):
    session_id = StrictCharField(required=False, allow_null=True, trim_whitespace=False)
    title = StrictCharField(required=False, allow_blank=True, max_length=services.TITLE_MAX_CHARS)


# Far beyond any real listing, and small enough that OFFSET + LIMIT stays a 32-bit integer:
# an unbounded offset overflowed the database's 64-bit OFFSET into a 500.
MAX_OFFSET = 1_000_000_000


class SessionListInput(serializers.Serializer[Any]):
    # [compat] The original's defaults: a page of 100, active sessions only.
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
    offset = serializers.IntegerField(min_value=0, max_value=MAX_OFFSET, default=0)
    active_only = serializers.BooleanField(default=True)


@api_view(["GET", "POST"])
def sessions_collection(request: Request) -> Response:
    if request.method == "POST":
        data = SessionCreateInput(data=body(request))
        data.is_valid(raise_exception=True)
        session = services.session_create(
            session_id=data.validated_data.get("session_id"),
            title=data.validated_data.get("title", ""),
        )
        return Response(
            {
                "id": session.id,
                "title": session.title,
                "message_count": session.message_count,
                "created_at": session.created_at.isoformat(),
                "last_activity": session.last_activity.isoformat(),
                "is_active": session.is_active,
                "current_agent": current_agent(session),
            },
            status=status.HTTP_201_CREATED,
        )
    params = SessionListInput(data=request.query_params)
    params.is_valid(raise_exception=True)
    page, total = selectors.session_list(**params.validated_data)
    return Response(
        {
            "sessions": [session_summary(s) for s in page],
            "total": total,
            "limit": params.validated_data["limit"],
            "offset": params.validated_data["offset"],
        }
    )


class SessionGetInput(serializers.Serializer[Any]):
    include_messages = serializers.BooleanField(default=False)


@api_view(["GET", "DELETE"])
def session_detail(request: Request, session_id: str) -> Response:
    session = services.session_get(session_id=session_id)
    if request.method == "DELETE":
        services.session_delete(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)
    params = SessionGetInput(data=request.query_params)
    params.is_valid(raise_exception=True)
    messages = None
    if params.validated_data["include_messages"]:
        messages = [m.to_dict() for m in selectors.session_messages(session=session)]
    return Response(
        {
            "session": {
                "id": session.id,
                "title": session.title,
                "description": session.description,
                "message_count": session.message_count,
                "messages": messages,
                "last_activity": session.last_activity.isoformat(),
                "is_active": session.is_active,
                "created_at": session.created_at.isoformat(),
                "duration_seconds": round(session.duration_seconds, 3),
                "current_agent": current_agent(session),
            }
        }
    )


class HistoryInput(serializers.Serializer[Any]):
    limit = serializers.IntegerField(min_value=1, max_value=1000, required=False)
    before = serializers.IntegerField(min_value=1, required=False)


@api_view(["GET"])
def session_history(request: Request, session_id: str) -> Response:
    session = services.session_get(session_id=session_id)
    params = HistoryInput(data=request.query_params)
    params.is_valid(raise_exception=True)
    messages = selectors.session_messages(session=session, **params.validated_data)
    return Response(
        {
            "session_id": session.id,
            "messages": [m.to_dict() for m in messages],
            "message_count": session.message_count,
            "last_activity": session.last_activity.isoformat(),
            "current_agent": current_agent(session),
            "agent_history": [s.to_dict() for s in agent_switches(session=session)],
            "has_more": bool(messages) and messages[0].seq > 1,
        }
    )


class AuditLogInput(serializers.Serializer[Any]):
    session_id = serializers.CharField(required=False, max_length=64)
    event_type = serializers.ChoiceField(choices=AuditEvent.Type.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)


@api_view(["GET"])
def audit_log(request: Request) -> Response:
    params = AuditLogInput(data=request.query_params)
    params.is_valid(raise_exception=True)
    filters = params.validated_data
    qs = AuditEvent.objects.all()
    if "session_id" in filters:
        qs = qs.for_session(filters["session_id"])
    if "event_type" in filters:
        qs = qs.filter(event_type=filters["event_type"])
    events = [e.to_dict() for e in qs[: filters["limit"]]]
    return Response(
        {
            "audit_log": events,
            "count": len(events),
            "filters": {
                "session_id": filters.get("session_id"),
                "event_type": filters.get("event_type"),
                "limit": filters["limit"],
            },
        }
    )


@api_view(["GET"])
def metrics(request: Request) -> Response:
    return Response(selectors.event_metrics())


@api_view(["GET"])
def event_stats(request: Request) -> Response:
    return Response(selectors.event_stats())


@api_view(["GET"])
def sessions_with_metrics(request: Request) -> Response:
    sessions = selectors.sessions_with_llm_requests()
    return Response({"sessions": sessions, "count": len(sessions)})


@api_view(["GET"])
def session_metrics(request: Request, session_id: str) -> Response:
    services.validate_session_id_or_404(session_id)
    usage = selectors.session_llm_usage(session_id=session_id)
    if usage is None:  # [compat] as the original: nothing recorded is not found
        raise NotFound(f"no LLM requests recorded for session {session_id!r}")
    return Response(usage)
