"""The OpenAPI schema (drf-spectacular) and its docs page: what every app's views share.

DRF views are introspected; the plain async Django views (health, metrics, the SSE endpoints)
are not DRF's, so :func:`document` gives each one a schema-only ``APIView`` that drf-spectacular
reads instead (Django never calls it). Every error is the one JSON shape, ``{"detail": ...}``.

``/api/schema/`` and ``/api/docs/`` are public when ``API_DOCS_PUBLIC`` is on (the default
under ``DEBUG``); otherwise they need the ``X-Internal-Auth`` key, like the API they describe,
or a staff login, so that staff can open the page in a browser that sends no such header.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiResponse
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.views import APIView

from agent_runtime.errors import error_response
from agent_runtime.middleware import key_is_valid
from agents.messages import CALL_ID_MAX
from sessions.services import SESSION_ID_RE

V = TypeVar("V", bound=Callable[..., Any])


class ErrorSerializer(serializers.Serializer[Any]):
    detail = serializers.CharField(help_text="What went wrong, in English.")


class AgentSwitchSerializer(serializers.Serializer[Any]):
    """A switch as the history and the agent context show it (agents.models.AgentSwitch)."""

    from_agent = serializers.CharField()
    to_agent = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    confidence = serializers.ChoiceField(
        choices=["high", "medium", "low"],
        allow_null=True,
        help_text="A level, never a number (the IDE's parser types it as a string).",
    )
    switched_at = serializers.DateTimeField()
    score = serializers.FloatField(allow_null=True, help_text="The router's score, 0 to 1.")


# The statuses the API answers with besides success, and what each means here (PROTOCOL §1).
ERROR_MEANINGS = {
    400: "Bad input (a query parameter or the body); `detail` says which and why.",
    401: "No `X-Internal-Auth` header, or the wrong key.",
    404: "Unknown session (or call, or nothing recorded).",
    409: "Conflict: the id exists, or someone else decided first.",
    413: "The body is larger than `MAX_REQUEST_BYTES`.",
    429: "Rate limited; see the `Retry-After` header.",
    503: "A dependency (the database, Redis) is unreachable; try again shortly.",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """The ``responses`` entries for these error statuses, all the ``Error`` shape."""
    return {
        status: OpenApiResponse(ErrorSerializer, description=ERROR_MEANINGS[status])
        for status in statuses
    }


def document(**operations: Callable[[Any], Any]) -> Callable[[V], V]:
    """Describe a plain Django view to drf-spectacular: ``get=extend_schema(...)`` per method.

    drf-spectacular lists only DRF views (a callback with a ``cls`` that is an ``APIView``), so
    this builds one that has the given methods, each carrying its ``extend_schema``.
    """

    def method(operation: Callable[[Any], Any]) -> Any:
        def handler(self: APIView, request: Any, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError("schema only: Django calls the plain view")

        return operation(handler)

    def decorator(view: V) -> V:
        attrs = {name: method(operation) for name, operation in operations.items()}
        view.cls = type(f"{view.__name__}_schema", (APIView,), attrs)  # type: ignore[attr-defined]
        view.initkwargs = {}  # type: ignore[attr-defined]
        return view

    return decorator


def event_stream(description: str) -> OpenApiResponse:
    """A ``text/event-stream`` reply: the chunks of PROTOCOL §3.2, one ``data:`` line each."""
    return OpenApiResponse(
        response={"type": "string"},
        description=description
        + " Each chunk is `data: <compact JSON>` and a blank line; `: keepalive` comment lines "
        "come while it is quiet. See docs/protocol.md for the chunk types.",
    )


# The path ids, as the runtime accepts them; a path id of another shape answers 404.
PATH_ID_SCHEMAS: dict[str, dict[str, Any]] = {
    "session_id": {"type": "string", "pattern": SESSION_ID_RE.pattern},
    "call_id": {"type": "string", "minLength": 1, "maxLength": CALL_ID_MAX},
}


def describe_path_ids(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS: every ``{session_id}`` and ``{call_id}`` in a path says its shape
    (drf-spectacular only knows they are ``<str:...>``)."""
    for operations in result["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in PATH_ID_SCHEMAS:
                    parameter["schema"] = dict(PATH_ID_SCHEMAS[parameter["name"]])
    return result


# --- the schema and its page -----------------------------------------------------------------


def _may_read_docs(request: HttpRequest) -> bool:
    if settings.API_DOCS_PUBLIC or key_is_valid(request.headers.get("X-Internal-Auth")):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def _guarded(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)  # keeps csrf_exempt: a POST is DRF's 405, not a CSRF 403
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not _may_read_docs(request):
            return error_response(401, "unauthorized")
        return view(request, *args, **kwargs)

    return guarded


schema_view = _guarded(SpectacularAPIView.as_view())
docs_view = _guarded(SpectacularSwaggerView.as_view(url_name="api-schema"))
