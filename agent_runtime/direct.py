"""The stream endpoint served straight from ASGI: the same view, without the per-request toll.

Through Django's ASGI handler every request pays for the whole middleware stack, and each of
its classic (sync) middleware hops to a thread and back, twice; the request-started and
-finished signals hop too; and every request gets a thread of its own for its database calls.
For a stream request that was about a third of a turn's CPU (bench/README.md). The stream
endpoint needs none of it: it is authenticated by a header (no session, no CSRF, no cookie),
answers JSON errors itself, and streams. So ``agent_runtime/asgi.py`` sends that one path here:
the key check and size limit of ``InternalAuthMiddleware``, the ``Host`` check, then the view
itself, its response sent as Django would (and cut short when the client disconnects).

Every other path, and Django's test client, still go through the full stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse

from agent_runtime.errors import bad_request, error_response, server_error, too_large_detail
from agent_runtime.middleware import InternalAuthMiddleware

logger = logging.getLogger("django.request")
View = Callable[[HttpRequest], Awaitable[HttpResponseBase]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class DirectView:
    """An ASGI application serving one async view."""

    def __init__(self, view: View) -> None:
        self.view = view

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        limit = settings.MAX_REQUEST_BYTES
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await _send(send, error_response(413, too_large_detail()))
                return
            if not message.get("more_body"):
                break
        request = ASGIRequest(scope, io.BytesIO(bytes(body)))
        try:
            request.get_host()
        except DisallowedHost as exc:
            await _send(send, bad_request(request, exc))
            return
        response: HttpResponseBase | None = InternalAuthMiddleware.refuse(request)
        if response is None:
            try:
                response = await self.view(request)
            except Exception:
                logger.exception("Internal Server Error: %s", request.path)
                response = server_error(request)
        await _send(send, response, receive)


def _headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    headers = [(k.encode("latin1"), v.encode("latin1")) for k, v in response.items()]
    headers.append((b"X-Content-Type-Options", b"nosniff"))  # as SecurityMiddleware would
    return headers


async def _send(
    send: Send,
    response: HttpResponseBase,
    receive: Receive | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": _headers(response),
            "trailers": False,
        }
    )
    if not isinstance(response, StreamingHttpResponse):
        body = response.content  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    assert receive is not None
    # An event stream's frames are bytes already (agents.views.SSEResponse): written as they
    # come, without the per-chunk wrapper of streaming_content.
    parts: Any = getattr(response, "frames", None) or response.streaming_content

    async def pump() -> None:
        async for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.ensure_future(pump())
    listening = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({pumping, listening}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, listening):
            task.cancel()
        await asyncio.wait({pumping, listening})
        if not pumping.cancelled() and pumping.exception() is not None:
            logger.error("stream response failed", exc_info=pumping.exception())
        with contextlib.suppress(Exception):
            await parts.aclose()  # the generator's own clean-up (its timers), now
