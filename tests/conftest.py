from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from sessions.models import AgentSession
from sessions.services import message_append, session_create
from tests.ide_union import check_chunk


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    """A PostgreSQL test database of this run's own, so two suites can share one server
    (pytest-django would otherwise give every run the same ``test_<name>``)."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        unique = f"test_{database['NAME']}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        database.setdefault("TEST", {})["NAME"] = unique


@pytest.fixture(autouse=True)
def _isolated_cache() -> Iterator[None]:
    # Rate-limit counters and locks must not leak from one test into the next.
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def api() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_INTERNAL_AUTH=settings.INTERNAL_API_KEY)
    return client


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def make_session(db: Any) -> Callable[..., AgentSession]:
    counter = iter(range(1, 10_000))

    def make(session_id: str | None = None, *, messages: int = 0, **kwargs: Any) -> AgentSession:
        session = session_create(session_id=session_id or f"s-{next(counter)}", **kwargs)
        for i in range(messages):
            message_append(
                session=session, role="user" if i % 2 == 0 else "assistant", content=f"m{i}"
            )
        session.refresh_from_db()
        return session

    return make


# --- The fake LLM and the stream endpoint --------------------------------------------------


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[Any]:
    from tests.fakellm import FakeLLM

    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def llm(fake_llm_server: Any, settings: Any) -> Iterator[Any]:
    """The runtime talks to a real local HTTP server playing the LLM."""
    from agents import tokens
    from agents.llm import reset_provider

    fake_llm_server.reset()
    tokens.forget()  # what an earlier test's model taught the counter
    settings.LLM_BASE_URL = fake_llm_server.url
    settings.LLM_MAX_RETRIES = 1
    settings.LLM_RETRY_BASE_DELAY = 0.01
    settings.LLM_RETRY_MAX_DELAY = 0.05
    settings.LLM_FIRST_BYTE_TIMEOUT = 5.0
    settings.LLM_IDLE_TIMEOUT = 5.0
    reset_provider()
    yield fake_llm_server
    reset_provider()
    tokens.forget()


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Split an SSE body into chunks, checking the [compat] framing on the way, and each chunk
    the way the IDE decodes it."""
    chunks = []
    for frame in raw.decode().split("\n\n"):
        if not frame or frame.startswith(":"):
            continue
        assert frame.startswith("data: "), frame
        assert "\n" not in frame, frame  # one data line per chunk, no event: lines
        chunks.append(check_chunk(json.loads(frame[len("data: ") :])))
    return chunks


class StreamClient:
    """Drives POST /agent/message/stream through Django's async stack."""

    def __init__(self) -> None:
        from django.test import AsyncClient

        self.client = AsyncClient()
        self.headers = {"X-Internal-Auth": settings.INTERNAL_API_KEY}

    async def post(self, session_id: str, message: Any, **extra: Any) -> Any:
        body = {"session_id": session_id, "message": message, **extra}
        return await self.raw(body)

    async def raw(self, body: Any) -> Any:
        return await self.client.post(
            "/agent/message/stream", body, content_type="application/json", headers=self.headers
        )

    async def send(self, session_id: str, message: Any, **extra: Any) -> list[dict[str, Any]]:
        """The chunks of one turn; asserts a 200 and exactly one final chunk, at the end."""
        response = await self.post(session_id, message, **extra)
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "text/event-stream"
        assert response["Cache-Control"] == "no-cache"
        assert response["X-Accel-Buffering"] == "no"
        raw = b"".join([part async for part in response.streaming_content])
        chunks = parse_sse(raw)
        assert [c["is_final"] for c in chunks].count(True) == 1, chunks
        assert chunks[-1]["is_final"] is True
        return chunks

    async def refused(self, session_id: str, message: Any, **extra: Any) -> dict[str, Any]:
        """A refusal the IDE user must read: HTTP 200 and one final ``error`` chunk carrying
        the status it stands for (PROTOCOL §3). Returns that chunk."""
        chunks = await self.send(session_id, message, **extra)
        assert len(chunks) == 1, chunks
        (chunk,) = chunks
        assert chunk["type"] == "error" and chunk["error"] == chunk["content"], chunk
        assert isinstance(chunk["metadata"]["status"], int), chunk
        assert isinstance(chunk["metadata"]["code"], str), chunk
        return chunk


@pytest.fixture
def stream() -> StreamClient:
    return StreamClient()


@pytest.fixture(scope="session", autouse=True)
def _close_connections_of_the_sync_thread(django_db_setup: Any) -> Iterator[None]:
    """database_sync_to_async runs on asgiref's shared sync thread, whose persistent
    connection would otherwise keep PostgreSQL from dropping the test database."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
