"""End to end against one real daphne process (SQLite, in-memory channel layer).

The fake LLM runs in this process (a real HTTP server on a thread); the runtime reaches it over
TCP exactly as it would reach a real provider. Clients speak the wire protocol: httpx for the
Gateway's SSE hop, ``websockets`` for an IDE connecting directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from tests import fakellm
from tests.e2e.conftest import (
    AUTH,
    Api,
    Socket,
    assert_strict,
    check_stream_headers,
    start_runtime,
    text_of,
    tool_result,
    user,
    wait_for,
    ws_connect,
)
from tests.e2e.server import Runtime

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runtime(request: pytest.FixtureRequest, sqlite_url: str, fake_llm_server: Any) -> Runtime:
    return start_runtime(request, database_url=sqlite_url, llm_url=fake_llm_server.url, name="one")


@pytest.fixture(scope="module")
def demo_runtime(request: pytest.FixtureRequest, sqlite_url: str) -> Runtime:
    """A second process on the same database with no LLM configured: the built-in demo model."""
    return start_runtime(request, database_url=sqlite_url, name="demo")


@pytest.fixture(scope="module")
def message_runtime(
    request: pytest.FixtureRequest, sqlite_url: str, fake_llm_server: Any
) -> Runtime:
    """A process sending each model reply as one chunk (STREAM_MODE=message)."""
    return start_runtime(
        request,
        database_url=sqlite_url,
        llm_url=fake_llm_server.url,
        extra_env={"STREAM_MODE": "message"},
        name="message",
    )


@pytest.fixture
def api(runtime: Runtime, http: httpx.AsyncClient) -> Api:
    return Api(runtime, http)


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:10]}"


# --- the four flows, over SSE (the Gateway) and over both WebSocket paths (an IDE) -------------


class SseDriver:
    kind = "sse"

    def __init__(self, api: Api) -> None:
        self.api = api

    async def turn(self, session_id: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.api.send(session_id, message)


class WsDriver:
    """One socket per session, kept open across the session's turns, as an IDE does."""

    kind = "ws"

    def __init__(self, runtime: Runtime, path: str, stack: contextlib.AsyncExitStack) -> None:
        self.runtime = runtime
        self.path = path
        self.stack = stack
        self.sockets: dict[str, Socket] = {}

    async def turn(self, session_id: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        if session_id not in self.sockets:
            self.sockets[session_id] = await self.stack.enter_async_context(
                ws_connect(self.runtime, session_id, path=self.path)
            )
        return await self.sockets[session_id].turn(message)


@pytest.fixture(params=["sse", "/ws/", "/api/v1/ws/"])
async def driver(request: pytest.FixtureRequest, api: Api, runtime: Runtime) -> AsyncIterator[Any]:
    if request.param == "sse":
        yield SseDriver(api)
        return
    async with contextlib.AsyncExitStack() as stack:
        yield WsDriver(runtime, request.param, stack)


async def test_a_routed_text_reply(driver: Any, api: Api, fake: Any) -> None:
    session = await api.new_session()
    fake.enqueue(fakellm.classify("coder", 0.8), fakellm.text("Hello there, friend."))
    chunks = await driver.turn(session, user("write a function"))
    switched = chunks[0]
    assert switched["type"] == "agent_switched"
    assert switched["content"] == "Switched to coder agent"
    assert switched["is_final"] is False
    assert switched["metadata"]["from_agent"] == "orchestrator"
    assert switched["metadata"]["to_agent"] == "coder"
    assert switched["metadata"]["confidence"] == "high"  # a string: the IDE types it String?
    assert switched["metadata"]["score"] == 0.8
    assert {c["type"] for c in chunks[1:]} == {"assistant_message"}
    assert chunks[-1]["is_final"] is True
    # One frame, one bubble: the final chunk carries text (the reply's last character).
    assert chunks[-1]["token"] == chunks[-1]["content"] == "."
    assert all(c["content"] for c in chunks)
    assert text_of(chunks) == "Hello there, friend."
    if driver.kind == "sse":
        assert len(chunks) > 3  # streamed delta by delta, not one blob
    history = await api.history(session)
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "write a function"),
        ("assistant", "Hello there, friend."),
    ]
    assert "tool_calls" not in history["messages"][1] or not history["messages"][1]["tool_calls"]
    assert history["current_agent"] == "coder"
    assert [(s["from_agent"], s["to_agent"]) for s in history["agent_history"]] == [
        ("orchestrator", "coder")
    ]
    classify, answer = fake.requests
    assert classify["response_format"] == {"type": "json_object"}
    assert answer["stream"] is True
    assert answer["messages"][1:] == [{"role": "user", "content": "write a function"}]


async def test_a_tool_call_then_its_result(driver: Any, api: Api, fake: Any) -> None:
    session = await api.new_session(agent="coder")
    cid = call_id()
    fake.enqueue(
        fakellm.tool_calls([(cid, "read_file", '{"path": "app.py"}')], text_before="Let me look."),
        fakellm.text("The file says hi."),
    )
    chunks = await driver.turn(session, user("what is in app.py?"))
    assert text_of(chunks) == "Let me look."
    call = chunks[-1]
    assert call["type"] == "tool_call"
    assert call["call_id"] == cid and call["tool_name"] == "read_file"
    assert call["arguments"] == {"path": "app.py"}
    assert call["requires_approval"] is False and call["is_final"] is True

    chunks = await driver.turn(session, tool_result(cid, {"content": "print('hi')"}))
    assert text_of(chunks) == "The file says hi."
    assert chunks[-1]["type"] == "assistant_message"
    sent = fake.requests[-1]["messages"][-1]
    assert sent["role"] == "tool" and sent["tool_call_id"] == cid
    assert "print('hi')" in sent["content"]
    messages = (await api.history(session))["messages"]
    assert_strict(messages)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"][0]["id"] == cid


async def test_a_hand_off_with_switch_mode(driver: Any, api: Api, fake: Any) -> None:
    session = await api.new_session(agent="coder")
    cid = call_id()
    fake.enqueue(
        fakellm.tool_calls([(cid, "switch_mode", '{"mode": "debug", "reason": "a crash"}')]),
        fakellm.text("Debugging now."),
    )
    chunks = await driver.turn(session, user("it crashes"))
    switched = chunks[0]
    assert switched["type"] == "agent_switched" and switched["is_final"] is False
    assert switched["metadata"] == {
        "from_agent": "coder",
        "to_agent": "debug",
        "reason": "a crash",
        "confidence": None,
        "score": None,
    }
    assert not any(c["type"] == "tool_call" for c in chunks)  # executed by the runtime itself
    assert text_of(chunks) == "Debugging now."
    assert chunks[-1]["type"] == "assistant_message" and chunks[-1]["is_final"] is True
    assert "write_file" not in {t["function"]["name"] for t in fake.requests[-1]["tools"]}
    history = await api.history(session)
    assert history["current_agent"] == "debug"
    assert (
        history["agent_history"][-1]["from_agent"],
        history["agent_history"][-1]["to_agent"],
    ) == (
        "coder",
        "debug",
    )
    assert_strict(history["messages"])


async def test_a_refused_tool_and_the_model_recovers(driver: Any, api: Api, fake: Any) -> None:
    session = await api.new_session()
    cid = call_id()
    fake.enqueue(
        fakellm.tool_calls([(cid, "write_file", '{"path": "x.py", "content": "1"}')]),
        fakellm.text("I cannot write files; here is the code instead."),
    )
    chunks = await driver.turn(session, user("write x.py", agent_type="ask"))
    assert chunks[0]["type"] == "agent_switched"
    assert chunks[0]["metadata"]["to_agent"] == "ask"
    assert not any(c["type"] == "tool_call" for c in chunks)  # never reached the client
    assert text_of(chunks) == "I cannot write files; here is the code instead."
    assert len(fake.requests) == 2  # forced agent: no classification; then the recovery
    refusals = [m for m in fake.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in refusals] == [cid]
    assert refusals[0]["content"].startswith("Error:")
    assert_strict((await api.history(session))["messages"])


# --- streaming behaviour --------------------------------------------------------------------


async def test_the_first_token_is_flushed_at_once(api: Api, fake: Any) -> None:
    session = await api.new_session(agent="coder")
    fake.enqueue(fakellm.text("a b c d e f", delay=0.3))  # ~1.5 s from first to last token
    stream = await api.stream(session, user("letters please"))
    first = next(f for f in stream.frames if f.chunk and f.chunk["type"] == "assistant_message")
    assert stream.ended_at is not None
    assert first.at < stream.ended_at - 0.8, (first.at, stream.ended_at)
    assert text_of(stream.chunks) == "a b c d e f"
    # Later tokens arrive spread out too, not buffered until the end.
    tokens = [f.at for f in stream.frames if f.chunk and f.chunk["token"]]
    assert len(tokens) >= 4 and tokens[-1] - tokens[0] > 0.8


async def test_message_mode_sends_each_reply_as_one_frame(
    message_runtime: Runtime, http: httpx.AsyncClient, fake: Any
) -> None:
    api = Api(message_runtime, http)
    session = await api.new_session(agent="coder")
    cid = call_id()
    fake.enqueue(
        fakellm.tool_calls([(cid, "read_file", '{"path": "a.py"}')], text_before="Let me look."),
        fakellm.text("The file says hi.", delay=0.05),
    )
    chunks = await api.send(session, user("what is in a.py?"))
    assert [(c["type"], c["content"], c["is_final"]) for c in chunks] == [
        ("assistant_message", "Let me look.", False),
        ("tool_call", None, True),
    ]
    async with ws_connect(message_runtime, session) as socket:
        chunks = await socket.turn(tool_result(cid, "hi"))
    assert [(c["type"], c["content"], c["token"], c["is_final"]) for c in chunks] == [
        ("assistant_message", "The file says hi.", "The file says hi.", True)
    ]


async def test_keepalives_while_the_model_is_slow(api: Api, fake: Any) -> None:
    session = await api.new_session(agent="coder")
    fake.enqueue(fakellm.text("Slow.", first_token_delay=2.5))
    stream = await api.stream(session, user("take your time"))
    first_data = next(i for i, f in enumerate(stream.frames) if not f.is_comment)
    comments = stream.frames[:first_data]
    assert comments, [f.raw for f in stream.frames]
    assert {f.raw for f in comments} == {": keepalive"}
    assert text_of(stream.chunks) == "Slow."


async def test_the_turn_finishes_after_the_client_hangs_up(api: Api, fake: Any) -> None:
    session = await api.new_session(agent="coder")
    reply = " ".join(f"word{i}" for i in range(20))
    fake.enqueue(fakellm.text(reply, delay=0.1))
    async with api.open_stream(session, user("say twenty words")) as stream:
        await check_stream_headers(stream.response)
        first = await asyncio.wait_for(stream.next_chunk(), 15)
        assert first["type"] == "assistant_message" and first["is_final"] is False
    # The connection is closed; the turn goes on and lands in the history.

    async def finished() -> list[dict[str, Any]] | None:
        messages = (await api.history(session))["messages"]
        return messages if len(messages) == 2 else None

    messages = await wait_for(finished, 10)
    assert messages, "the reply never reached the history"
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "say twenty words"),
        ("assistant", reply),
    ]
    assert len(fake.requests) == 1


# --- the demo model, refusals --------------------------------------------------------------


async def test_the_demo_model_without_an_llm(demo_runtime: Runtime, http: httpx.AsyncClient):
    demo = Api(demo_runtime, http)
    health = (await http.get(f"{demo.url}/health")).json()
    assert health["llm_mode"] == "demo"
    assert health["status"] == "healthy"
    session = await demo.new_session()
    chunks = await demo.send(session, user("read README.md"))
    assert chunks[0]["type"] == "agent_switched"
    assert "[demo]" in text_of(chunks)
    call = chunks[-1]
    assert call["type"] == "tool_call" and call["tool_name"] == "read_file"
    assert call["arguments"] == {"path": "README.md"}
    chunks = await demo.send(session, tool_result(call["call_id"], "# Agent runtime\nHello."))
    assert text_of(chunks).startswith("[demo]")
    assert len([c for c in chunks if c["type"] == "assistant_message"]) > 2  # streamed
    if chunks[-1]["type"] == "tool_call":  # e.g. attempt_completion: the IDE answers it too
        chunks = await demo.send(session, tool_result(chunks[-1]["call_id"], "shown"))
        assert chunks[-1]["type"] == "assistant_message"
    assert_strict((await demo.history(session))["messages"])


async def test_refusals_before_streaming(
    runtime: Runtime, api: Api, http: httpx.AsyncClient, fake: Any
) -> None:
    session = await api.new_session(agent="coder")
    url = f"{runtime.url}/agent/message/stream"
    body = {"session_id": session, "message": user("hi")}
    for headers in ({}, {"X-Internal-Auth": "wrong-key"}):
        refused = await http.post(url, json=body, headers=headers)
        assert refused.status_code == 401
        assert refused.json() == {"detail": "unauthorized"}
    assert (await http.get(f"{runtime.url}/sessions")).status_code == 401
    ghost = await api.refused("e2e-ghost-session", user("x"))
    assert ghost["metadata"] == {"status": 404, "code": "not_found"}
    assert "not found" in ghost["error"]
    flat = await http.post(
        url, json={"session_id": session, "type": "user_message", "content": "x"}, headers=AUTH
    )
    assert flat.status_code == 400
    assert isinstance(flat.json()["detail"], str)
    assert fake.requests == []
    assert (await api.history(session))["messages"] == []


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/no/such/endpoint", AUTH, 404),
        ("GET", "/static/no-such-file.css", {}, 404),
        ("PUT", "/health", {}, 405),
        ("GET", "/agent/message/stream", AUTH, 405),
        ("GET", "/sessions?offset=99999999999999999999", AUTH, 400),
        ("GET", "/sessions", {**AUTH, "Host": "evil.example"}, 400),
        ("POST", "/admin/login/", {}, 403),  # no CSRF cookie or token
    ],
)
async def test_errors_from_the_real_server_are_json(
    runtime: Runtime,
    http: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
) -> None:
    response = await http.request(method, f"{runtime.url}{path}", headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["detail"], str)


async def close_code(runtime: Runtime, path: str, headers: dict[str, str]) -> int | None:
    """The code a socket is closed with right after its handshake (which must succeed)."""
    async with websockets.connect(
        f"{runtime.ws_url}{path}", additional_headers=headers, open_timeout=15, proxy=None
    ) as connection:
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
    return closed.value.rcvd.code if closed.value.rcvd else None


@pytest.mark.parametrize(
    ("case", "headers", "code"),
    [
        ("no key", {}, 4401),
        ("wrong key", {"X-Internal-Auth": "nope"}, 4401),
        ("unknown session", AUTH, 4404),
    ],
)
async def test_a_websocket_without_access_is_refused_with_its_reason(
    runtime: Runtime, api: Api, case: str, headers: dict[str, str], code: int
) -> None:
    session = "e2e-no-such-session" if case == "unknown session" else await api.new_session()
    assert await close_code(runtime, f"/ws/{session}", headers) == code


def log_since(runtime: Runtime, mark: int) -> str:
    """What the server logged after ``mark`` (a size of its log file)."""
    return runtime.log_path.read_bytes()[mark:].decode(errors="replace")


async def test_an_unknown_websocket_path_is_closed_cleanly(runtime: Runtime) -> None:
    mark = runtime.log_path.stat().st_size
    for path in ["/ws/", "/ws/x/extra", "/api/v1/ws/", "/no/such/socket"]:
        assert await close_code(runtime, path, AUTH) == 4404, path
    assert "Traceback" not in log_since(runtime, mark)


async def test_a_binary_frame_is_answered_and_the_socket_lives(
    runtime: Runtime, api: Api, fake: Any
) -> None:
    session = await api.new_session(agent="coder")
    mark = runtime.log_path.stat().st_size
    async with ws_connect(runtime, session) as socket:
        await socket.connection.send(b'{"type": "user_message", "content": "hi"}')
        error = await socket.next_chunk(timeout=10)  # checks the [compat] keys and order
        assert error["type"] == "error" and error["is_final"] is True
        assert "binary" in error["error"]
        fake.enqueue(fakellm.text("Still listening."))
        assert text_of(await socket.turn(user("hi"))) == "Still listening."
    assert "Traceback" not in log_since(runtime, mark)


# --- restart safety (keep last: it restarts the module's process) ----------------------------


async def test_a_pending_approval_survives_a_restart(runtime: Runtime, api: Api, fake: Any) -> None:
    session = await api.new_session(agent="coder")
    cid = call_id()
    fake.enqueue(fakellm.tool_calls([(cid, "execute_command", '{"command": "pytest -q"}')]))
    chunks = await api.send(session, user("run the tests"))
    asked = chunks[-1]
    assert asked["type"] == "tool_call" and asked["call_id"] == cid
    assert asked["requires_approval"] is True

    before = runtime.proc.pid if runtime.proc else None
    await asyncio.get_running_loop().run_in_executor(None, runtime.restart)
    assert runtime.proc is not None and runtime.proc.pid != before  # a new process, no memory

    pending = (await api.get(f"/sessions/{session}/pending-approvals")).json()
    assert [p["call_id"] for p in pending["pending_approvals"]] == [cid]
    assert [p["request_id"] for p in pending["pending_approvals"]] == [cid]
    async with ws_connect(runtime, session) as socket:
        decided = await api.post(
            f"/sessions/{session}/approvals/{cid}/decision", json={"decision": "approve"}
        )
        assert decided.status_code == 200, decided.text
        started = time.monotonic()
        released = await socket.next_chunk(timeout=15)
        assert time.monotonic() - started < 15
        assert released["type"] == "tool_call" and released["call_id"] == cid
        assert released["requires_approval"] is False
        assert released["arguments"] == {"command": "pytest -q"}
        assert released["is_final"] is True

    fake.enqueue(fakellm.text("Tests pass."))
    chunks = await api.send(session, tool_result(cid, "3 passed"))
    assert text_of(chunks) == "Tests pass."
    assert (await api.get(f"/sessions/{session}/pending-approvals")).json()["count"] == 0
    assert_strict((await api.history(session))["messages"])
