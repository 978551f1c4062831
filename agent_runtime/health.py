"""GET /health and GET /ready: every dependency a turn needs, checked at once.

Plain async views, so a slow check never holds a worker thread.
"""

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
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers

from agent_runtime.errors import method_not_allowed
from agent_runtime.openapi import document
from agents.llm import breaker_state, breaker_states, get_provider

if TYPE_CHECKING:
    from channels.layers import BaseChannelLayer


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
        # "state" is the worst endpoint's; "endpoints" has each endpoint's breaker.
        "circuit_breaker": {
            "status": "ok",
            "state": breaker_state(),
            "endpoints": breaker_states(),
        },
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


class CheckSerializer(serializers.Serializer[Any]):
    """One check; each adds what it knows (backend, vendor, provider, breaker state...)."""

    status = serializers.ChoiceField(choices=["ok", "error"])
    detail = serializers.CharField(required=False, help_text="What failed, when it did.")
    latency_ms = serializers.FloatField(required=False)


class ChecksSerializer(serializers.Serializer[Any]):
    database = CheckSerializer()
    cache = CheckSerializer()
    channel_layer = CheckSerializer()
    llm = CheckSerializer()
    circuit_breaker = CheckSerializer()


class HealthSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=["healthy", "degraded", "unhealthy"])
    service = serializers.CharField()
    version = serializers.CharField()
    llm_mode = serializers.ChoiceField(choices=["demo", "remote"])
    ready = serializers.BooleanField(help_text="The database, cache and channel layer answer.")
    checks = ChecksSerializer()


def _health_doc(summary: str, ok: str, unavailable: str) -> Any:
    return extend_schema(
        summary=summary,
        tags=["operations"],
        auth=[],  # public: for operators' probes and load balancers
        responses={
            200: OpenApiResponse(HealthSerializer, description=ok),
            503: OpenApiResponse(HealthSerializer, description=unavailable),
        },
    )


# No cookie authenticates these, so CSRF does not apply; checked, a POST would be a 403, not
# a 405.
@document(
    get=_health_doc(
        "Health of every dependency (no key)",
        "healthy or degraded.",
        "unhealthy: no database.",
    )
)
@csrf_exempt
async def health(request: HttpRequest) -> JsonResponse:
    """GET /health: every check and what failed; 503 only without a database (a process
    that has one can still answer most requests, and restarting it would not bring Redis
    or the model back)."""
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request, "GET", "HEAD")
    payload = await _health_payload()
    return JsonResponse(payload, status=503 if payload["status"] == "unhealthy" else 200)


@document(
    get=_health_doc(
        "Readiness, for load balancers (no key)",
        "This process can serve turns.",
        "The database, the cache or the channel layer is down.",
    )
)
@csrf_exempt
async def ready(request: HttpRequest) -> JsonResponse:
    """GET /ready, for load balancers: 503 unless the database, the cache and the channel
    layer all answer, i.e. unless this process can serve turns now."""
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request, "GET", "HEAD")
    payload = await _health_payload()
    return JsonResponse(payload, status=200 if payload["ready"] else 503)
