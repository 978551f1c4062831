"""The stream endpoint, POST /agent/message/stream (PROTOCOL §3).

A plain async Django view returning ``StreamingHttpResponse``: under daphne each chunk is
flushed at once, and a client that goes away cancels only this generator, never the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django_ratelimit.core import is_ratelimited
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from redis.exceptions import RedisError
from rest_framework import serializers

from agent_runtime import jsonbody
from agent_runtime.errors import (
    ApplicationError,
    error_response,
    method_not_allowed,
    too_large_detail,
)
from agent_runtime.openapi import document, errors, event_stream
from agents import turns
from agents.chunks import KEEPALIVE_FRAME, refusal_chunk, sse_frame
from agents.consumers import LAYER_DOWN, LAYER_DOWN_TEXT
from agents.messages import (
    CALL_ID_MAX,
    CONTENT_MAX_CHARS,
    DECISIONS,
    REASON_MAX_CHARS,
    parse_request,
)
from agents.services import outstanding_chunks
from sessions.db import TRANSIENT, DatabaseUnavailable
from sessions.services import session_get, validate_session_id_or_404

if TYPE_CHECKING:
    from channels.layers import BaseChannelLayer

logger = logging.getLogger(__name__)
LAYER_TIMEOUT_SECONDS = 5.0


# --- The stream request (PROTOCOL §3), for the schema: agents.messages parses it -------------


class UserMessageSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=["user_message"])
    content = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=CONTENT_MAX_CHARS,
        help_text="Empty: run the current agent again.",
    )
    role = serializers.JSONField(required=False, allow_null=True, help_text="Ignored.")
    agent_type = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=32,
        help_text="Force this agent (a switch the user asked for).",
    )


class ToolResultSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=["tool_result"])
    call_id = serializers.CharField(max_length=CALL_ID_MAX, help_text="An outstanding call's id.")
    result = serializers.JSONField(required=False, allow_null=True, help_text="Any JSON.")
    error = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="Set when the tool failed (or the IDE user refused it).",
    )


class HitlApproveOrRejectSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=["hitl_decision"])
    call_id = serializers.CharField(max_length=CALL_ID_MAX)
    decision = serializers.ChoiceField(choices=[d for d in DECISIONS if d != "edit"])
    modified_arguments = serializers.DictField(required=False, allow_null=True)
    feedback = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=settings.APPROVAL_FEEDBACK_MAX_CHARS,
    )


class HitlEditSerializer(HitlApproveOrRejectSerializer):
    decision = serializers.ChoiceField(choices=["edit"])
    modified_arguments = serializers.DictField(help_text="The arguments the IDE will execute.")


class SwitchAgentSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=["switch_agent"])
    agent_type = serializers.CharField(max_length=32)
    reason = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=REASON_MAX_CHARS
    )
    content = serializers.JSONField(required=False, allow_null=True, help_text="Ignored.")


class StreamRequestSerializer(serializers.Serializer[Any]):
    session_id = serializers.CharField(
        help_text="An existing session's id (an unknown one gets an error chunk)."
    )
    message = PolymorphicProxySerializer(
        component_name="ClientMessage",
        serializers=[
            UserMessageSerializer,
            ToolResultSerializer,
            HitlApproveOrRejectSerializer,
            HitlEditSerializer,
            SwitchAgentSerializer,
        ],
        resource_type_field_name=None,
    )
    wait = serializers.BooleanField(
        required=False,
        default=True,
        help_text="false: refuse at once (an error chunk, status 409) if the session is busy.",
    )


def _rate_limit(request: HttpRequest, session_id: str) -> None:
    """Stream requests per session (django-ratelimit's counters live in the shared cache).

    It fails closed: with its cache (Redis) unreachable the request is refused with a 503,
    since the same Redis carries the channel layer that sockets and followers need.
    """
    if not settings.RATELIMIT_ENABLE:
        return
    try:
        limited = is_ratelimited(
            request,
            group="message-stream",
            key=lambda group, req: session_id,
            rate=settings.RATE_LIMIT_MESSAGES,
            increment=True,
        )
    except (RedisError, OSError) as exc:
        logger.warning("rate limiter's cache unreachable: %s", exc)
        raise ApplicationError(
            "The runtime's cache (Redis) is unreachable, so it cannot take messages right "
            "now; try again in a moment.",
            status=503,
            code="cache_unavailable",
        ) from None
    if limited:
        raise ApplicationError(
            "rate limit exceeded for this session",
            status=429,
            headers={"Retry-After": "60"},
            code="rate_limited",
        )


def _read_json(request: HttpRequest) -> Any:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ApplicationError(too_large_detail(), status=413) from None
    try:
        return jsonbody.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApplicationError(f"malformed JSON body: {exc}") from None


# Header-authenticated (X-Internal-Auth), never by cookie, so CSRF does not apply.
@document(
    post=extend_schema(
        summary="Send a message; the turn streams back as server-sent events",
        tags=["stream"],
        description=(
            "Only a body that is not a stream request at all gets an HTTP error (400, 401, "
            "413). Every other refusal (unknown session or call, a busy session, a rate limit, "
            "a dependency down) is a 200 whose one chunk is an `error` chunk carrying "
            "`metadata.status` and `metadata.code`: the Gateway shows any non-200 reply as a "
            'bare "Agent error: <code>".'
        ),
        request=StreamRequestSerializer,
        responses={
            (200, "text/event-stream"): event_stream(
                "The turn's chunks; the last has is_final: true and the body closes after it."
            ),
            **errors(400, 401, 413),
        },
    )
)
@csrf_exempt
async def message_stream(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    if request.method != "POST":
        return method_not_allowed(request, "POST")
    try:
        session_id, message, wait = parse_request(_read_json(request))
    except ApplicationError as exc:  # not a stream request at all: an HTTP error (§3)
        return error_response(exc.status, exc.detail, **exc.headers)
    listener: asyncio.Queue[Any] = asyncio.Queue()
    try:
        validate_session_id_or_404(session_id)
        await turns.submit(
            session_id,
            message,
            wait=wait,
            listener=listener,
            precheck=lambda: _rate_limit(request, session_id),
        )
    except ApplicationError as exc:
        # Everything else the IDE user must read travels inside the stream: the Gateway turns
        # any non-200 reply into a bare "Agent error: <code>".
        return sse_response(_refusal(exc))
    except TRANSIENT as exc:
        logger.warning("stream request for %s refused: database unreachable: %s", session_id, exc)
        return sse_response(_refusal(DatabaseUnavailable("take this message")))
    return sse_response(sse_stream(listener))


async def _refusal(exc: ApplicationError) -> AsyncIterator[bytes]:
    """One final ``error`` chunk carrying the HTTP status it stands for (PROTOCOL §3)."""
    yield sse_frame(refusal_chunk(exc))


class SSEResponse(StreamingHttpResponse):
    """An event stream whose frames are bytes already: agent_runtime.direct writes them as
    they come, without Django's per-chunk wrapper (``streaming_content``, which the Django
    handler and the test client still use)."""

    def __init__(self, frames: AsyncIterator[bytes]) -> None:
        super().__init__(frames, content_type="text/event-stream")
        self.frames = frames


def sse_response(frames: AsyncIterator[bytes]) -> SSEResponse:
    """[compat] §3.1: the headers every event stream carries."""
    response = SSEResponse(frames)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


_QUIET = object()  # what the keepalive timer puts in a quiet stream's queue


async def sse_stream(listener: asyncio.Queue[Any]) -> AsyncIterator[bytes]:
    """Frames from the turn's queue, with a keepalive comment whenever it is quiet.

    It opens with a keepalive: daphne sends the headers with the first body bytes, and the
    first chunk may wait seconds for the routing call. Whatever is already queued goes out in
    one write: one wake-up per burst, not per token, and never a wait for more. The keepalive
    is one timer per stream that looks back when it fires (a timeout context around every wait
    cost a timer per token).
    """
    yield KEEPALIVE_FRAME
    loop = asyncio.get_running_loop()
    every = settings.KEEPALIVE_SECONDS
    last = loop.time()
    timer: asyncio.TimerHandle

    def check() -> None:
        nonlocal timer
        now = loop.time()
        if now - last >= every:
            listener.put_nowait(_QUIET)
            timer = loop.call_at(now + every, check)
        else:
            timer = loop.call_at(last + every, check)

    timer = loop.call_at(last + every, check)
    try:
        while True:
            chunk = listener.get_nowait() if not listener.empty() else await listener.get()
            frames = []
            while chunk is not None:
                frames.append(KEEPALIVE_FRAME if chunk is _QUIET else sse_frame(chunk))
                if listener.empty():
                    break
                chunk = listener.get_nowait()
            if frames:
                last = loop.time()
                yield b"".join(frames)
            if chunk is None:
                return
    finally:
        timer.cancel()


class CancelSerializer(serializers.Serializer[Any]):
    session_id = serializers.CharField()
    cancelled = serializers.BooleanField(help_text="A turn was running and is stopped.")


@document(
    post=extend_schema(
        summary="Stop the session's running turn, in whichever process runs it",
        request=None,
        responses={200: CancelSerializer, **errors(401, 404)},
    )
)
@csrf_exempt
async def session_cancel(request: HttpRequest, session_id: str) -> HttpResponse:
    """POST /sessions/{id}/cancel: stop the running turn, in whichever process runs it."""
    if request.method != "POST":
        return method_not_allowed(request, "POST")
    try:
        await database_sync_to_async(session_get)(session_id=session_id)
    except ApplicationError as exc:
        return error_response(exc.status, exc.detail)
    return JsonResponse({"session_id": session_id, "cancelled": await turns.cancel(session_id)})


class EventsInput(serializers.Serializer[Any]):
    replay = serializers.ChoiceField(
        choices=["outstanding"],
        required=False,
        help_text="First send the tool_call chunks still waiting on the IDE or a human.",
    )


@document(
    get=extend_schema(
        summary="Follow every chunk of the session, live (server-sent events)",
        description="It never ends by itself: the client closes it.",
        parameters=[EventsInput],
        responses={
            (200, "text/event-stream"): event_stream(
                "Every chunk of every turn of the session, whoever started it."
            ),
            **errors(401, 404, 503),
        },
    )
)
@csrf_exempt  # header-authenticated like the others; checked, a POST would be a 403, not a 405
async def session_events(
    request: HttpRequest, session_id: str
) -> HttpResponse | StreamingHttpResponse:
    """GET /sessions/{id}/events: every chunk of the session, live, as SSE.

    For HTTP-only clients what a WebSocket is for IDEs: it follows turns started by anyone
    (another client, a staff decision, expiry), in any process, through the channel layer.
    """
    if request.method != "GET":
        return method_not_allowed(request, "GET")
    try:
        await database_sync_to_async(session_get)(session_id=session_id)
    except ApplicationError as exc:
        return error_response(exc.status, exc.detail)
    except TRANSIENT:
        return error_response(503, "The database is unreachable; try again in a moment.")
    # Subscribed before the response starts, so a channel layer that is down is a clear 503
    # rather than a stream that never begins.
    layer = get_channel_layer()
    assert layer is not None
    group = turns.group_name(session_id)
    channel = await layer.new_channel()
    try:
        async with asyncio.timeout(LAYER_TIMEOUT_SECONDS):
            await layer.group_add(group, channel)
    except (*LAYER_DOWN, TimeoutError) as exc:
        logger.warning("events of %s refused: channel layer unreachable: %s", session_id, exc)
        return error_response(503, LAYER_DOWN_TEXT)
    replay = request.GET.get("replay") == "outstanding"
    return sse_response(group_stream(session_id, layer, group, channel, replay=replay))


async def group_stream(
    session_id: str, layer: BaseChannelLayer, group: str, channel: str, *, replay: bool
) -> AsyncIterator[bytes]:
    # One receive() for the whole stream, never cancelled by a keepalive: channels_redis drops
    # what it had fetched for a receive that is cancelled.
    receiving: asyncio.Future[Any] | None = None
    try:
        yield KEEPALIVE_FRAME  # headers and a first byte at once: the client knows it is live
        if replay:  # read after subscribing, so nothing falls between the two
            for chunk in await database_sync_to_async(outstanding_chunks)(session_id=session_id):
                yield sse_frame(chunk)
        while True:
            if receiving is None:
                receiving = asyncio.ensure_future(layer.receive(channel))
            done, _ = await asyncio.wait({receiving}, timeout=settings.KEEPALIVE_SECONDS)
            if not done:
                yield KEEPALIVE_FRAME
                continue
            try:
                event = receiving.result()
            except LAYER_DOWN as exc:  # Redis went away: end the stream; clients reconnect
                logger.warning("events of %s ended: channel layer unreachable: %s", session_id, exc)
                return
            receiving = None
            if event.get("type") == "session.chunk":
                yield sse_frame(event["chunk"])
    finally:
        if receiving is not None:
            receiving.cancel()
        with contextlib.suppress(*LAYER_DOWN, TimeoutError):
            async with asyncio.timeout(LAYER_TIMEOUT_SECONDS):
                await layer.group_discard(group, channel)
