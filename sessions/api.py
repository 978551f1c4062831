"""REST endpoints for sessions, their history and the events (PROTOCOL §2)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, cast

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from agent_runtime.errors import NotFound, method_not_allowed
from agents.llm import breaker_state, get_provider
from sessions import selectors, services
from sessions.models import AgentSession, AuditEvent

if TYPE_CHECKING:
    from channels.layers import BaseChannelLayer


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF would turn 12 into "12"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("must be a string.")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses keys it does not know, so a typo is a 400 rather than silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["the body must be a JSON object."]}
            )
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {"non_field_errors": [f"unknown field(s): {', '.join(unknown)}."]}
            )
        return super().to_internal_value(data)


def body(request: Request) -> Any:
    """The JSON body; an empty body is an empty object."""
    return request.data if request.body else {}


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
            "agent_history": [s.to_dict() for s in selectors.agent_switches(session=session)],
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


# --- Health: plain async views, so a slow check never holds a worker thread ---------------------


def _check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"status": "ok", "vendor": connection.vendor}


def _check_cache() -> dict[str, Any]:
    cache.set("health-check", "1", 5)
    if cache.get("health-check") != "1":
        raise RuntimeError("cache read back a different value")
    return {
        "status": "ok",
        "backend": str(settings.CACHES["default"]["BACKEND"]).rsplit(".", 1)[-1],
    }


async def _timed(check: Any, timeout: float = 3.0) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any]
    try:
        result = await asyncio.wait_for(check, timeout)
    except Exception as exc:  # a failing check is reported, never raised
        result = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"[:300]}
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


async def _check_channel_layer() -> dict[str, Any]:
    # Settings always configure the default layer, so it is never None.
    layer = cast("BaseChannelLayer", get_channel_layer())
    await layer.group_send("health-check", {"type": "health.ping"})
    return {"status": "ok", "backend": type(layer).__name__}


async def _check_llm() -> dict[str, Any]:
    provider = get_provider()  # a misconfigured LLM_BASE_URL raises here: a failed check
    result = await provider.check_health()
    result["provider"] = provider.label
    return result


# What a turn cannot run without: with any of these failing, /ready answers 503.
TURN_DEPENDENCIES = ("database", "cache", "channel_layer")


async def _health_payload() -> dict[str, Any]:
    database, cache_check, layer, llm = await asyncio.gather(
        _timed(database_sync_to_async(_check_database)()),
        _timed(sync_to_async(_check_cache)()),
        _timed(_check_channel_layer()),
        _timed(_check_llm()),
    )
    checks = {
        "database": database,
        "cache": cache_check,
        "channel_layer": layer,
        "llm": llm,
        "circuit_breaker": {"status": "ok", "state": breaker_state()},
    }
    if database["status"] != "ok":
        overall = "unhealthy"
    elif any(c["status"] != "ok" for c in checks.values()) or breaker_state() != "closed":
        overall = "degraded"
    else:
        overall = "healthy"
    return {
        "status": overall,
        "service": "agent-runtime",
        "version": settings.VERSION,
        "llm_mode": "demo" if not settings.LLM_BASE_URL else "remote",
        "ready": all(checks[name]["status"] == "ok" for name in TURN_DEPENDENCIES),
        "checks": checks,
    }


# No cookie authenticates these, so CSRF does not apply; checked, a POST would be a 403, not
# a 405.
@csrf_exempt
async def health(request: HttpRequest) -> JsonResponse:
    """GET /health: every check and what failed; 503 only without a database (a process
    that has one can still answer most requests, and restarting it would not bring Redis
    or the model back)."""
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request, "GET", "HEAD")
    payload = await _health_payload()
    return JsonResponse(payload, status=503 if payload["status"] == "unhealthy" else 200)


@csrf_exempt
async def ready(request: HttpRequest) -> JsonResponse:
    """GET /ready, for load balancers: 503 unless the database, the cache and the channel
    layer all answer, i.e. unless this process can serve turns now."""
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request, "GET", "HEAD")
    payload = await _health_payload()
    return JsonResponse(payload, status=200 if payload["ready"] else 503)
