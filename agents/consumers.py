"""The session WebSocket (PROTOCOL §4): the §3 messages in, the §3.2 chunks out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import PermissionDenied
from redis.exceptions import RedisError

from agent_runtime import jsonbody, staff
from agent_runtime.errors import ApplicationError
from agent_runtime.middleware import key_is_valid
from agents import turns
from agents.chunks import dumps, error_chunk, refusal_chunk
from agents.messages import ClientMessage, parse_message
from agents.services import outstanding_chunks
from sessions.services import session_get

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_UNAVAILABLE = 4503  # the channel layer (Redis) is unreachable: try again later
# What a channel layer raises when its Redis is unreachable.
LAYER_DOWN = (RedisError, OSError)
LAYER_DOWN_TEXT = (
    "The runtime's channel layer (Redis) is unreachable, so this socket cannot follow the "
    "session; reconnect in a moment."
)


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def authorized(scope: Mapping[str, Any]) -> bool:
    """The internal key (IDEs, services: usually no Origin), or a staff login from a page
    of this server (cookies ride along cross-site, so those must pass an origin check)."""
    headers = _headers(scope)
    if key_is_valid(headers.get("x-internal-auth")):
        return True
    user = scope.get("user")
    if not (user and user.is_authenticated and user.is_staff):
        return False
    origin = headers.get("origin")
    if not origin:
        return False
    netloc = urlsplit(origin).netloc
    return netloc == headers.get("host") or origin in settings.CSRF_TRUSTED_ORIGINS


def wants_replay(query: str) -> bool:
    return "outstanding" in parse_qs(query).get("replay", [])


def connection_actor(scope: Mapping[str, Any]) -> turns.Actor | None:
    """Who an authorized socket speaks for: the IDE (the key), or a staff member who may
    decide approvals. None: a staff member who may only watch (the admin shows them sessions
    but lets them decide nothing). PermissionDenied: the admin shows them no session at all."""
    if key_is_valid(_headers(scope).get("x-internal-auth")):
        return turns.IDE
    user = scope["user"]
    if staff.may_decide(user):
        return turns.Actor(kind="staff", name=f"staff:{user.get_username()}", user=user)
    if staff.may_watch(user):
        return None
    raise PermissionDenied("this staff login may not see sessions")


class SessionConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.session_id: str = self.scope["url_route"]["kwargs"]["session_id"]
        # Accepted before any refusal: closed before accept(), every refusal reaches the client
        # as the same HTTP 403; after it, the close code says which one it was.
        await self.accept()
        if not authorized(self.scope):
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        try:
            # Before the session lookup: who may not see sessions learns nothing of them.
            self.actor = await database_sync_to_async(connection_actor)(self.scope)
        except PermissionDenied:
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        try:
            await database_sync_to_async(session_get)(session_id=self.session_id)
        except ApplicationError:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        group = turns.group_name(self.session_id)
        try:
            await self.channel_layer.group_add(group, self.channel_name)
        except LAYER_DOWN as exc:
            await self.layer_down({"type": "layer.down", "error": str(exc)})
            return
        self.group = group  # set once joined: disconnect() leaves only a group it joined
        # One inbox, worked in order: frames sent back to back run in the order they came.
        self.inbox: asyncio.Queue[ClientMessage | None] = asyncio.Queue()
        self.worker = asyncio.create_task(self._work())
        if wants_replay(self.scope.get("query_string", b"").decode()):
            for chunk in await database_sync_to_async(outstanding_chunks)(
                session_id=self.session_id
            ):
                await self.send_chunk(chunk)

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        self.gone = True
        if hasattr(self, "inbox"):
            # Frames already received still run; turns go on without this socket, and
            # their results land in the history.
            self.inbox.put_nowait(None)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if not hasattr(self, "inbox"):
            return  # refused in connect(): a frame sent before the close arrived
        if text_data is None:
            # Channels' JSON consumer raises on a binary frame, which closes the socket (1011).
            await self.send_chunk(error_chunk("binary frames are not accepted: send JSON as text"))
            return
        await self.receive_json(await self.decode_json(text_data), **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.actor is None:
            await self.send_chunk(
                error_chunk(
                    "This connection may only watch: acting on a session needs the "
                    "approvals.decide_approval permission or the internal API key."
                )
            )
            return
        if isinstance(content, dict) and content.get("type") == "cancel":
            if not await turns.cancel(self.session_id):
                await self.send_chunk(error_chunk("No turn is running in this session."))
            return
        if isinstance(content, dict) and "__invalid__" in content:
            await self.send_chunk(error_chunk(content["__invalid__"]))
            return
        try:
            message = parse_message(content)
        except ApplicationError as exc:
            await self.send_chunk(refusal_chunk(exc))
            return
        # Queued, not awaited here: waiting for the session's lease must not stop this socket
        # from receiving the chunks of the turn it is waiting behind.
        self.inbox.put_nowait(message)

    async def _work(self) -> None:
        actor = self.actor
        assert actor is not None  # receive_json queues nothing for a watch-only socket
        while (message := await self.inbox.get()) is not None:
            try:
                await turns.submit(self.session_id, message, wait=True, actor=actor)
            except ApplicationError as exc:  # as the stream endpoint says it: status, code
                await self.send_chunk(refusal_chunk(exc))
            except Exception:  # keep serving this socket whatever one frame did
                logger.exception("frame for session %s failed", self.session_id)
                await self.send_chunk(error_chunk("The runtime failed to handle this message."))

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        try:
            return jsonbody.loads(text_data)
        except ValueError:
            return {"type": None, "__invalid__": "malformed JSON frame"}

    # Channels' dispatch loop dies on the first error of a channel-layer read (Redis going
    # away), which daphne reports as a crash and the client as a dropped socket. The consumer
    # receives through this wrapper instead: an error becomes one "layer.down" event, which
    # closes the socket with a reason and a close code that says "later".
    @property  # type: ignore[override]  # the stubs type it as an ASGI receive callable
    def channel_receive(self) -> Callable[[], Awaitable[dict[str, Any]]]:
        return self._receive_from_layer

    @channel_receive.setter
    def channel_receive(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._layer_receive = receive

    async def _receive_from_layer(self) -> dict[str, Any]:
        if getattr(self, "layer_failed", False):
            await asyncio.Event().wait()  # reported once; the socket is closing
        try:
            return await self._layer_receive()
        except LAYER_DOWN as exc:
            self.layer_failed = True
            return {"type": "layer.down", "error": str(exc)}

    async def layer_down(self, event: dict[str, Any]) -> None:
        logger.warning(
            "socket of %s closed: channel layer unreachable: %s", self.session_id, event["error"]
        )
        await self.send_chunk(
            error_chunk(LAYER_DOWN_TEXT, status=503, code="channel_layer_unavailable")
        )
        await self.close(code=CLOSE_UNAVAILABLE)

    async def session_chunk(self, event: dict[str, Any]) -> None:
        await self.send_chunk(event["chunk"])

    async def send_chunk(self, chunk: dict[str, Any]) -> None:
        if getattr(self, "gone", False):
            return  # a queued frame failed after its socket closed: nobody to tell
        await self.send(text_data=dumps(chunk))


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Every WebSocket path that is not a session's: closed with 4404, as an unknown session is
    (without it Channels' router raises "No route found", a traceback and a failed handshake)."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
