"""Fixtures and clients for the end-to-end tests: real daphne processes, real sockets.

The clients here speak the wire protocol the way the Gateway and IDEs do (httpx for SSE,
``websockets`` for the session socket) and check the [compat] framing of every frame they read.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import websockets

from tests.e2e.server import API_KEY, Runtime
from tests.history import assert_strict as assert_strict  # re-exported for the e2e tests
from tests.history import text_of as text_of  # re-exported for the e2e tests
from tests.ide_union import check_chunk

AUTH = {"X-Internal-Auth": API_KEY}
TURN_TIMEOUT = 30.0  # a whole turn, generous for a loaded 2-core machine


# --- fixtures: the fake LLM, databases, processes ----------------------------------------------


@pytest.fixture
def fake(fake_llm_server: Any) -> Iterator[Any]:
    """The session-wide fake LLM (tests/conftest.py), emptied for each test."""
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('e2e') / 'e2e.sqlite3'}"


@pytest.fixture(scope="module")
def postgres_db() -> Iterator[str]:
    """A fresh PostgreSQL database for the module, dropped afterwards."""
    from tests.services import require_postgres

    server_url = require_postgres()
    import psycopg

    name = f"e2e_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(server_url)
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def redis_env() -> dict[str, str]:
    """A Redis URL plus key prefixes of this run's own, so parallel runs never collide."""
    from tests.services import require_redis

    url = require_redis()
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    return {"REDIS_URL": url, "CHANNEL_PREFIX": prefix, "CACHE_PREFIX": prefix}


def start_runtime(request: pytest.FixtureRequest, **kwargs: Any) -> Runtime:
    runtime = Runtime(**kwargs)
    request.addfinalizer(runtime.close)
    runtime.start()
    return runtime


# --- HTTP and SSE ------------------------------------------------------------------------------


class FramingError(AssertionError):
    pass


@dataclass
class Frame:
    at: float  # seconds since the request was sent
    raw: str  # the frame as sent, without its blank-line terminator
    chunk: dict[str, Any] | None = None  # None for a comment (keepalive)

    @property
    def is_comment(self) -> bool:
        return self.chunk is None


def check_chunk_json(payload: str) -> dict[str, Any]:
    """A chunk's JSON must be compact, and the chunk one the IDE can decode (every key in the
    [compat] order, each of its type)."""
    chunk = json.loads(payload)
    if not isinstance(chunk, dict):
        raise FramingError(f"a chunk must be a JSON object: {payload}")
    compact = {
        json.dumps(chunk, separators=(",", ":"), ensure_ascii=escape) for escape in (False, True)
    }
    if payload not in compact:
        raise FramingError(f"not compact JSON: {payload}")
    return check_chunk(chunk)


def parse_frame(block: str, at: float) -> Frame:
    """One SSE frame: a comment, or optional ``id:`` lines then exactly one ``data: `` line."""
    if block.startswith(":"):
        if "\n" in block:
            raise FramingError(f"a comment frame spans lines: {block!r}")
        return Frame(at=at, raw=block)
    lines = block.split("\n")
    *ids, data = lines
    for line in ids:  # the only extra the Gateway tolerates (used for resume)
        if not (line.startswith("id: ") and line[4:].isdigit()):
            raise FramingError(f"unexpected line {line!r} in frame {block!r}")
    if not data.startswith("data: "):
        raise FramingError(f"a chunk frame must be one 'data: ' line: {block!r}")
    return Frame(at=at, raw=block, chunk=check_chunk_json(data[len("data: ") :]))


@dataclass
class Stream:
    """An SSE response being read frame by frame, with the arrival time of each."""

    response: httpx.Response
    started: float
    frames: list[Frame] = field(default_factory=list)
    ended_at: float | None = None
    _buffer: bytes = b""
    _raw: AsyncIterator[bytes] | None = None

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [f.chunk for f in self.frames if f.chunk is not None]

    async def next_frame(self) -> Frame | None:
        """The next frame, or None once the body has ended (it must end between frames)."""
        if self._raw is None:
            self._raw = self.response.aiter_raw()  # one iterator for the whole body
        while b"\n\n" not in self._buffer:
            if self.ended_at is not None:
                return None
            try:
                self._buffer += await anext(self._raw)
            except StopAsyncIteration:
                self.ended_at = time.monotonic() - self.started
                if self._buffer:
                    raise FramingError(f"the body ended inside a frame: {self._buffer!r}") from None
                return None
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        if b"\r" in block:
            raise FramingError(f"CR in an SSE frame: {block!r}")
        frame = parse_frame(block.decode(), time.monotonic() - self.started)
        self.frames.append(frame)
        return frame

    async def next_chunk(self) -> dict[str, Any]:
        while (frame := await self.next_frame()) is not None:
            if frame.chunk is not None:
                return frame.chunk
        raise AssertionError("the stream ended before a chunk arrived")

    async def read_all(self) -> list[dict[str, Any]]:
        while await self.next_frame() is not None:
            pass
        return self.chunks


async def check_stream_headers(response: httpx.Response) -> None:
    if response.status_code != 200:
        await response.aread()
        raise AssertionError(f"{response.status_code} {response.text}")
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"


def check_turn(chunks: list[dict[str, Any]]) -> None:
    """Exactly one final chunk, at the end; tool calls carry object arguments."""
    assert chunks, "the turn produced no chunk"
    assert [c["is_final"] for c in chunks].count(True) == 1, chunks
    assert chunks[-1]["is_final"] is True, chunks
    for chunk in chunks:
        if chunk["type"] == "tool_call":
            assert isinstance(chunk["arguments"], dict), chunk
            assert chunk is chunks[-1], chunks
        if chunk["type"] == "error":
            assert chunk["is_final"] is True and chunk["error"], chunk
        if chunk["type"] == "assistant_message":
            assert chunk["token"] == chunk["content"], chunk


class Api:
    """The runtime's HTTP API as the Gateway uses it."""

    def __init__(self, runtime: Runtime, client: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.client = client

    @property
    def url(self) -> str:
        return self.runtime.url

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        return await self.client.request(method, self.url + path, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def new_session(self, agent: str | None = None, prefix: str = "e2e") -> str:
        session_id = f"{prefix}-{uuid.uuid4().hex[:12]}"
        response = await self.post("/sessions", json={"session_id": session_id})
        assert response.status_code == 201, response.text
        if agent:
            switched = await self.post(
                f"/agents/{session_id}/switch", json={"target_agent": agent, "reason": "e2e"}
            )
            assert switched.status_code == 200, switched.text
            assert switched.json()["context"]["current_agent"] == agent
        return session_id

    async def history(self, session_id: str) -> dict[str, Any]:
        response = await self.get(f"/sessions/{session_id}/history")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    @asynccontextmanager
    async def open_stream(
        self, session_id: str, message: dict[str, Any], **extra: Any
    ) -> AsyncIterator[Stream]:
        body = {"session_id": session_id, "message": message, **extra}
        started = time.monotonic()
        async with self.client.stream(
            "POST", self.url + "/agent/message/stream", json=body, headers=AUTH
        ) as response:
            yield Stream(response=response, started=started)

    async def stream(self, session_id: str, message: dict[str, Any], **extra: Any) -> Stream:
        """One whole turn over SSE; checks headers, framing and the final chunk."""
        async with self.open_stream(session_id, message, **extra) as stream:
            await check_stream_headers(stream.response)
            await asyncio.wait_for(stream.read_all(), TURN_TIMEOUT)
        check_turn(stream.chunks)
        return stream

    async def send(self, session_id: str, message: dict[str, Any], **extra: Any) -> list[Any]:
        return (await self.stream(session_id, message, **extra)).chunks

    async def refused(self, session_id: str, message: dict[str, Any], **extra: Any) -> Any:
        """A refusal inside the stream (PROTOCOL §3): one final error chunk with its status."""
        chunks = await self.send(session_id, message, **extra)
        assert len(chunks) == 1 and chunks[0]["type"] == "error", chunks
        assert isinstance(chunks[0]["metadata"]["status"], int), chunks
        return chunks[0]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(TURN_TIMEOUT, connect=10.0), trust_env=False
    ) as client:
        yield client


# --- WebSocket ---------------------------------------------------------------------------------


class Socket:
    """A session WebSocket as an IDE uses it: key header, no Origin."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.received: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def next_chunk(self, timeout: float = TURN_TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv(), timeout)
        assert isinstance(raw, str), raw
        chunk = check_chunk_json(raw)
        self.received.append(chunk)
        return chunk

    async def until_final(self, timeout: float = TURN_TIMEOUT) -> list[dict[str, Any]]:
        """The chunks up to and including the next ``is_final`` one."""
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            chunk = await self.next_chunk(max(0.1, deadline - time.monotonic()))
            chunks.append(chunk)
            if chunk["is_final"]:
                return chunks

    async def turn(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        await self.send(message)
        chunks = await self.until_final()
        check_turn(chunks)
        return chunks

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Whatever arrives within ``seconds`` (normally nothing)."""
        extra = []
        try:
            while True:
                extra.append(await self.next_chunk(seconds))
        except TimeoutError:
            return extra


@asynccontextmanager
async def ws_connect(
    runtime: Runtime, session_id: str, *, path: str = "/ws/", headers: dict[str, str] | None = None
) -> AsyncIterator[Socket]:
    async with websockets.connect(
        f"{runtime.ws_url}{path}{session_id}",
        additional_headers=AUTH if headers is None else headers,
        open_timeout=15,
        close_timeout=5,
        proxy=None,
    ) as connection:
        yield Socket(connection)


# --- assertions shared by both modules ---------------------------------------------------------


async def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> Any:
    """Poll an async predicate until it returns something truthy (returned) or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)


def user(content: str, **extra: Any) -> dict[str, Any]:
    return {"type": "user_message", "content": content, "role": "user", **extra}


def tool_result(call_id: str, value: Any = "ok", **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "call_id": call_id, "result": value, **extra}
