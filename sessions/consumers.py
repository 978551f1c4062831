"""The session WebSocket (PROTOCOL §4): the §3 messages in, the §3.2 chunks out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from agent_runtime.errors import ApplicationError
from agent_runtime.middleware import key_is_valid
from agents import turns
from agents.chunks import dumps, error_chunk
from agents.messages import parse_message
from sessions.services import session_get

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404


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


class SessionConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.session_id: str = self.scope["url_route"]["kwargs"]["session_id"]
        self.tasks: set[asyncio.Task[None]] = set()
        if not authorized(self.scope):
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        try:
            await database_sync_to_async(session_get)(session_id=self.session_id)
        except ApplicationError:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = turns.group_name(self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        # Running turns go on without this socket: their results land in the history.

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
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
            await self.send_chunk(error_chunk(exc.detail))
            return
        # Not awaited here: waiting for the session's lease must not stop this socket from
        # receiving the chunks of the turn it is waiting behind.
        task = asyncio.create_task(self._submit(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _submit(self, message: Any) -> None:
        try:
            await turns.submit(self.session_id, message, wait=True)
        except ApplicationError as exc:
            await self.send_chunk(error_chunk(exc.detail))

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return {"type": None, "__invalid__": "malformed JSON frame"}

    async def session_chunk(self, event: dict[str, Any]) -> None:
        await self.send_chunk(event["chunk"])

    async def send_chunk(self, chunk: dict[str, Any]) -> None:
        await self.send(text_data=dumps(chunk))
