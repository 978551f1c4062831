"""REST endpoints for sessions, their history and the events (PROTOCOL §2)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from agent_runtime.errors import NotFound
from agent_runtime.openapi import AgentSwitchSerializer, errors
from agent_runtime.rest import StrictCharField, StrictSerializer, body, query
from agents.selectors import agent_switches
from sessions import selectors, services
from sessions.models import AgentSession, AuditEvent, Message


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


# --- Response shapes, for the schema (drf-spectacular): the views build the same dicts ---------


class SessionCreatedSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    title = serializers.CharField(allow_blank=True)
    message_count = serializers.IntegerField(min_value=0)
    created_at = serializers.DateTimeField()
    last_activity = serializers.DateTimeField()
    is_active = serializers.BooleanField()
    current_agent = serializers.CharField(allow_null=True)


class SessionSummarySerializer(SessionCreatedSerializer):
    pass


class SessionListSerializer(serializers.Serializer[Any]):
    sessions = SessionSummarySerializer(many=True)
    total = serializers.IntegerField(min_value=0, help_text="Every matching session.")
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()


class ToolCallFunctionSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    arguments = serializers.CharField(help_text="The arguments as a JSON string (OpenAI style).")


class AssistantToolCallSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    type = serializers.ChoiceField(choices=["function"])
    function = ToolCallFunctionSerializer()


class UsageSerializer(serializers.Serializer[Any]):
    prompt_tokens = serializers.IntegerField(allow_null=True)
    completion_tokens = serializers.IntegerField(allow_null=True)


class HistoryMessageSerializer(serializers.Serializer[Any]):
    """One message of the history: OpenAI chat style (PROTOCOL §6) plus the runtime's keys."""

    role = serializers.ChoiceField(choices=Message.Role.choices)
    content = serializers.CharField(allow_blank=True)
    tool_calls = AssistantToolCallSerializer(many=True, required=False)
    tool_call_id = serializers.CharField(required=False, allow_blank=True)
    name = serializers.CharField(required=False)
    seq = serializers.IntegerField(min_value=1)
    agent = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    usage = UsageSerializer(required=False)


class SessionDetailSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    title = serializers.CharField(allow_blank=True)
    description = serializers.CharField(allow_blank=True)
    message_count = serializers.IntegerField(min_value=0)
    messages = HistoryMessageSerializer(
        many=True, allow_null=True, help_text="null unless include_messages=true."
    )
    last_activity = serializers.DateTimeField()
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    duration_seconds = serializers.FloatField()
    current_agent = serializers.CharField(allow_null=True)


class SessionEnvelopeSerializer(serializers.Serializer[Any]):
    session = SessionDetailSerializer()


class HistorySerializer(serializers.Serializer[Any]):
    session_id = serializers.CharField()
    messages = HistoryMessageSerializer(many=True)
    message_count = serializers.IntegerField(min_value=0)
    last_activity = serializers.DateTimeField()
    current_agent = serializers.CharField(allow_null=True)
    agent_history = AgentSwitchSerializer(many=True)
    has_more = serializers.BooleanField(help_text="Older messages exist (see before=).")


class AuditEventSerializer(serializers.Serializer[Any]):
    """The common keys; each event type adds its own beside them."""

    event_id = serializers.UUIDField()
    event_type = serializers.ChoiceField(choices=AuditEvent.Type.choices)
    timestamp = serializers.DateTimeField()
    session_id = serializers.CharField(allow_null=True)
    correlation_id = serializers.CharField(allow_null=True)
    agent = serializers.CharField(allow_null=True)


class AuditLogFiltersSerializer(serializers.Serializer[Any]):
    session_id = serializers.CharField(allow_null=True)
    event_type = serializers.CharField(allow_null=True)
    limit = serializers.IntegerField()


class AuditLogSerializer(serializers.Serializer[Any]):
    audit_log = AuditEventSerializer(many=True)
    count = serializers.IntegerField(min_value=0)
    filters = AuditLogFiltersSerializer()


class AgentProcessingSerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField(min_value=0)
    total_duration_ms = serializers.IntegerField(min_value=0)
    success_count = serializers.IntegerField(min_value=0)
    failure_count = serializers.IntegerField(min_value=0)


class ToolExecutionsSerializer(serializers.Serializer[Any]):
    requested = serializers.IntegerField(min_value=0)
    completed = serializers.IntegerField(min_value=0)
    failed = serializers.IntegerField(min_value=0)
    requires_approval = serializers.IntegerField(min_value=0)


class HitlDecisionsSerializer(serializers.Serializer[Any]):
    approve = serializers.IntegerField(min_value=0)
    edit = serializers.IntegerField(min_value=0)
    reject = serializers.IntegerField(min_value=0)


class EventCountersSerializer(serializers.Serializer[Any]):
    agent_switches = serializers.DictField(
        child=serializers.IntegerField(min_value=0), help_text='Keyed "<from>_to_<to>".'
    )
    agent_processing = serializers.DictField(child=AgentProcessingSerializer())
    tool_executions = serializers.DictField(child=ToolExecutionsSerializer())
    hitl_decisions = serializers.DictField(child=HitlDecisionsSerializer())
    # DRF's metaclass moves declared fields off the class; the stubs see Serializer.errors.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.DictField(child=serializers.IntegerField(min_value=0)),
        help_text="Per agent, per error type.",
    )


class ComputedMetricsSerializer(serializers.Serializer[Any]):
    total_agent_switches = serializers.IntegerField(min_value=0)
    total_agent_runs = serializers.IntegerField(min_value=0)
    agent_success_rate = serializers.FloatField(allow_null=True)
    total_tool_calls = serializers.IntegerField(min_value=0)
    total_hitl_decisions = serializers.IntegerField(min_value=0)
    total_errors = serializers.IntegerField(min_value=0)
    llm_requests = serializers.IntegerField(min_value=0)
    llm_success_rate = serializers.FloatField(allow_null=True)
    llm_total_tokens = serializers.IntegerField(min_value=0)


class EventMetricsSerializer(serializers.Serializer[Any]):
    metrics = EventCountersSerializer()
    computed = ComputedMetricsSerializer()
    timestamp = serializers.DateTimeField()


class EventStatsSerializer(serializers.Serializer[Any]):
    total_published = serializers.IntegerField(min_value=0)
    successful_handlers = serializers.IntegerField(min_value=0)
    failed_handlers = serializers.IntegerField(min_value=0)
    last_event_time = serializers.DateTimeField(allow_null=True)
    success_rate = serializers.FloatField(min_value=0, max_value=1)


class SessionIdsSerializer(serializers.Serializer[Any]):
    sessions = serializers.ListField(child=serializers.CharField())
    count = serializers.IntegerField(min_value=0)


class LLMRequestSerializer(serializers.Serializer[Any]):
    timestamp = serializers.DateTimeField()
    model = serializers.CharField(allow_null=True)
    duration_ms = serializers.IntegerField(min_value=0)
    prompt_tokens = serializers.IntegerField(min_value=0)
    completion_tokens = serializers.IntegerField(min_value=0)
    total_tokens = serializers.IntegerField(min_value=0)
    has_tool_calls = serializers.BooleanField()
    success = serializers.BooleanField()
    error = serializers.CharField(allow_null=True)
    agent = serializers.CharField(allow_null=True)
    purpose = serializers.CharField()
    provider = serializers.CharField(allow_blank=True)
    started_at = serializers.DateTimeField()


class SessionUsageSerializer(serializers.Serializer[Any]):
    session_id = serializers.CharField()
    total_requests = serializers.IntegerField(min_value=1)
    successful_requests = serializers.IntegerField(min_value=0)
    failed_requests = serializers.IntegerField(min_value=0)
    total_duration_ms = serializers.IntegerField(min_value=0)
    average_duration_ms = serializers.FloatField(min_value=0)
    total_prompt_tokens = serializers.IntegerField(min_value=0)
    total_completion_tokens = serializers.IntegerField(min_value=0)
    total_tokens = serializers.IntegerField(min_value=0)
    average_tokens_per_request = serializers.FloatField(min_value=0)
    requests_with_tools = serializers.IntegerField(min_value=0)
    requests = LLMRequestSerializer(many=True)


# --- Views --------------------------------------------------------------------------------------


@extend_schema_field({"type": "string", "pattern": services.SESSION_ID_RE.pattern})
class SessionIdField(StrictCharField):
    """A client-chosen id; ``services.validate_session_id`` checks it (and says how)."""


class SessionCreateInput(StrictSerializer):
    session_id = SessionIdField(required=False, allow_null=True, trim_whitespace=False)
    title = StrictCharField(required=False, allow_blank=True, max_length=services.TITLE_MAX_CHARS)


# Far beyond any real listing, and small enough that OFFSET + LIMIT stays a 32-bit integer:
# an unbounded offset overflowed the database's 64-bit OFFSET into a 500.
MAX_OFFSET = 1_000_000_000


class SessionListInput(serializers.Serializer[Any]):
    # [compat] The original's defaults: a page of 100, active sessions only.
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
    offset = serializers.IntegerField(min_value=0, max_value=MAX_OFFSET, default=0)
    active_only = serializers.BooleanField(default=True)


@extend_schema(
    methods=["POST"],
    summary="Create a session",
    request=SessionCreateInput,
    responses={201: SessionCreatedSerializer, **errors(400, 401, 409, 413)},
)
@extend_schema(
    methods=["GET"],
    operation_id="sessions_list",
    summary="List sessions, most recently active first",
    parameters=[SessionListInput],
    responses={200: SessionListSerializer, **errors(400, 401)},
)
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
    params = SessionListInput(data=query(request))
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


@extend_schema(
    methods=["GET"],
    operation_id="sessions_retrieve",
    summary="A session",
    parameters=[SessionGetInput],
    responses={200: SessionEnvelopeSerializer, **errors(400, 401, 404)},
)
@extend_schema(
    methods=["DELETE"],
    summary="Delete a session (soft: it answers 404 afterwards; rows stay until purged)",
    responses={204: OpenApiResponse(description="Deleted."), **errors(401, 404)},
)
@api_view(["GET", "DELETE"])
def session_detail(request: Request, session_id: str) -> Response:
    session = services.session_get(session_id=session_id)
    if request.method == "DELETE":
        services.session_delete(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)
    params = SessionGetInput(data=query(request))
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


@extend_schema(
    summary="A session's history (OpenAI chat style) and agent switches",
    parameters=[HistoryInput],
    responses={200: HistorySerializer, **errors(400, 401, 404)},
)
@api_view(["GET"])
def session_history(request: Request, session_id: str) -> Response:
    session = services.session_get(session_id=session_id)
    params = HistoryInput(data=query(request))
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


@extend_schema(
    summary="The audit log, newest first",
    parameters=[AuditLogInput],
    responses={200: AuditLogSerializer, **errors(400, 401)},
)
@api_view(["GET"])
def audit_log(request: Request) -> Response:
    params = AuditLogInput(data=query(request))
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


@extend_schema(
    summary="Event counters, computed from persisted rows",
    responses={200: EventMetricsSerializer, **errors(401)},
)
@api_view(["GET"])
def metrics(request: Request) -> Response:
    return Response(selectors.event_metrics())


@extend_schema(
    summary="Event statistics, from the audit log",
    responses={200: EventStatsSerializer, **errors(401)},
)
@api_view(["GET"])
def event_stats(request: Request) -> Response:
    return Response(selectors.event_stats())


@extend_schema(
    summary="Ids of the sessions that made model calls, oldest first",
    responses={200: SessionIdsSerializer, **errors(401)},
)
@api_view(["GET"])
def sessions_with_metrics(request: Request) -> Response:
    sessions = selectors.sessions_with_llm_requests()
    return Response({"sessions": sessions, "count": len(sessions)})


@extend_schema(
    summary="One session's LLM usage",
    responses={200: SessionUsageSerializer, **errors(401, 404)},
)
@api_view(["GET"])
def session_metrics(request: Request, session_id: str) -> Response:
    services.validate_session_id_or_404(session_id)
    usage = selectors.session_llm_usage(session_id=session_id)
    if usage is None:  # [compat] as the original: nothing recorded is not found
        raise NotFound(f"no LLM requests recorded for session {session_id!r}")
    return Response(usage)
