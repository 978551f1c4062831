"""The OpenAPI schema (drf-spectacular): what every app's views share to describe themselves.

DRF views are introspected; the plain async Django views (health, metrics, the SSE endpoints)
are not DRF's, so :func:`document` gives each one a schema-only ``APIView`` that drf-spectacular
reads instead (Django never calls it). Every error is the one JSON shape, ``{"detail": ...}``.
The schema and its page are served by ``agent_runtime/apidocs.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer
from rest_framework import serializers
from rest_framework.views import APIView

from agent_runtime.rest import StrictSerializer
from agents.chunks import CHUNK_KEYS
from agents.messages import CALL_ID_MAX
from sessions.services import SESSION_ID_RE

V = TypeVar("V", bound=Callable[..., Any])


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's, told three things it cannot see (found by fuzzing with schemathesis)."""

    def map_parsers(self) -> list[str]:
        # The parsers read any body as JSON whatever its Content-Type (jsonbody.AnyJSONParser):
        # "*/*" invited XML and form bodies, which can only be refused.
        return ["application/json"]

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)  # type: ignore[no-untyped-call]
        if isinstance(serializer, StrictSerializer):  # an unknown key is a 400
            schema["additionalProperties"] = False
        return schema

    def _get_request_for_media_type(self, serializer: Any, direction: str = "request") -> Any:
        schema, required = super()._get_request_for_media_type(serializer, direction)  # type: ignore[no-untyped-call]
        # A oneOf body (a decision, a stream request's message) has no "required" list of its
        # own for drf-spectacular to read; each of its shapes requires keys.
        return schema, required or isinstance(serializer, PolymorphicProxySerializer)


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


# [compat] PROTOCOL §3.2: the closed union IDEs decode. Every key is always there, in this
# order; `confidence` in an agent switch's metadata is a string, never a number.
CHUNK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "One chunk of a stream (an SSE `data:` line, or a WebSocket frame). Every key is "
        "always present, unused ones null (`requires_approval` false)."
    ),
    "properties": {
        "type": {
            "type": "string",
            "enum": ["assistant_message", "tool_call", "agent_switched", "error"],
        },
        "content": {"type": ["string", "null"]},
        "token": {"type": ["string", "null"], "description": "A text delta (assistant_message)."},
        "is_final": {"type": "boolean", "description": "The response's last chunk."},
        "call_id": {"type": ["string", "null"]},
        "tool_name": {"type": ["string", "null"]},
        "arguments": {"type": ["object", "null"], "description": "An object, never a string."},
        "requires_approval": {"type": "boolean"},
        "error": {"type": ["string", "null"]},
        "metadata": {
            "type": ["object", "null"],
            "description": (
                "error: status (the HTTP code it stands for), code, retry_after; "
                "agent_switched: from_agent, to_agent, reason, confidence, score."
            ),
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string"},
                "retry_after": {"type": "integer"},
                "confidence": {"enum": ["high", "medium", "low", None]},
            },
        },
    },
    "required": list(CHUNK_KEYS),
}


def event_stream(description: str) -> OpenApiResponse:
    """A ``text/event-stream`` reply. Under OpenAPI 3.1 its schema describes one event, whose
    ``data`` is a chunk as JSON (``contentSchema``; schemathesis checks every event by it)."""
    return OpenApiResponse(
        response={
            "type": "object",
            "properties": {
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/Chunk"},
                },
                "event": {"type": "string", "enum": ["message"], "description": "Never sent."},
                "id": {"type": "string"},
            },
            "required": ["data"],
        },
        description=description
        + " Each event is one chunk: `data: <compact JSON>` and a blank line, no `event:` "
        "line; `: keepalive` comment lines come while it is quiet. See docs/protocol.md.",
    )


# The path ids, as the runtime accepts them; a path id of another shape answers 404.
PATH_ID_SCHEMAS: dict[str, dict[str, Any]] = {
    "session_id": {"type": "string", "pattern": SESSION_ID_RE.pattern},
    "call_id": {"type": "string", "minLength": 1, "maxLength": CALL_ID_MAX},
}


def finish(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS: what drf-spectacular cannot know. Every ``{session_id}`` and
    ``{call_id}`` in a path says its shape (it only sees ``<str:...>``), and the chunk the
    event streams carry is a component."""
    for operations in result["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in PATH_ID_SCHEMAS:
                    parameter["schema"] = dict(PATH_ID_SCHEMAS[parameter["name"]])
    result["components"]["schemas"]["Chunk"] = CHUNK_SCHEMA
    return result
