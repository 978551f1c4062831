"""End to end against two daphne processes sharing one PostgreSQL database and one Redis.

A and B are what a load balancer would spread clients over: chunks travel between them on the
Redis channel layer, and a session's turns are serialised by the lease on its database row.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from tests import fakellm
from tests.e2e.conftest import (
    AUTH,
    Api,
    Stream,
    assert_strict,
    check_stream_headers,
    check_turn,
    start_runtime,
    text_of,
    tool_result,
    user,
    ws_connect,
)
from tests.e2e.server import Runtime

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pair(
    request: pytest.FixtureRequest,
    postgres_db: str,
    redis_env: dict[str, str],
    fake_llm_server: Any,
) -> tuple[Runtime, Runtime]:
    common = {
        "database_url": postgres_db,
        "redis_url": redis_env["REDIS_URL"],
        "llm_url": fake_llm_server.url,
        "extra_env": {k: v for k, v in redis_env.items() if k != "REDIS_URL"},
    }
    a = start_runtime(request, name="A", **common)
    b = start_runtime(request, name="B", **common)
    return a, b


@pytest.fixture
def a(pair: tuple[Runtime, Runtime], http: httpx.AsyncClient) -> Api:
    return Api(pair[0], http)


@pytest.fixture
def b(pair: tuple[Runtime, Runtime], http: httpx.AsyncClient) -> Api:
    return Api(pair[1], http)


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:10]}"


async def test_a_socket_on_a_sees_a_turn_started_on_b(a: Api, b: Api, fake: Any) -> None:
    session = await a.new_session(agent="coder")
    reply = "Relayed across processes by Redis."
    fake.enqueue(fakellm.text(reply, delay=0.02))
    async with ws_connect(a.runtime, session) as socket:
        sse = await b.send(session, user("hello from B"))
        relayed = await socket.until_final(timeout=15)
    check_turn(relayed)
    assert text_of(relayed) == text_of(sse) == reply
    # The socket may get deltas coalesced, never reordered or changed.
    assert relayed[-1] == sse[-1]
    assert {c["type"] for c in relayed} == {"assistant_message"}


async def test_two_turns_sent_to_two_processes_never_interleave(a: Api, b: Api, fake: Any):
    session = await a.new_session(agent="coder")
    first_reply = "first reply arrives one word at a time here"
    second_reply = "second reply also comes one word at a time"
    fake.enqueue(fakellm.text(first_reply, delay=0.1), fakellm.text(second_reply, delay=0.1))
    header_times: dict[str, float] = {}
    streams: dict[str, Stream] = {}

    async def turn(api: Api, name: str) -> None:
        async with api.open_stream(session, user(f"message via {name}")) as stream:
            header_times[name] = time.monotonic()
            await check_stream_headers(stream.response)
            await asyncio.wait_for(stream.read_all(), 30)
        check_turn(stream.chunks)
        streams[name] = stream

    started = time.monotonic()
    await asyncio.gather(turn(a, "A"), turn(b, "B"))

    messages = (await a.history(session))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert_strict(messages)
    first_name = messages[0]["content"].removeprefix("message via ")
    second_name = "B" if first_name == "A" else "A"
    assert messages[2]["content"] == f"message via {second_name}"
    # Each reply whole, in the order the lease granted the turns.
    assert messages[1]["content"] == text_of(streams[first_name].chunks) == first_reply
    assert messages[3]["content"] == text_of(streams[second_name].chunks) == second_reply
    # The second request waited for the lease: its response only started once the first
    # turn had streamed (its headers follow the first turn's first token, ~1 s of tokens).
    first_stream = streams[first_name]
    first_token_at = first_stream.started + next(f.at for f in first_stream.frames if f.chunk)
    assert header_times[second_name] > first_token_at
    assert header_times[second_name] - started > 0.5
    assert [m["messages"][-1]["content"] for m in fake.requests] == [
        f"message via {first_name}",
        f"message via {second_name}",
    ]


async def test_a_second_turn_that_will_not_wait_is_refused_with_409(
    a: Api, b: Api, fake: Any
) -> None:
    session = await a.new_session(agent="coder")
    reply = " ".join(f"w{i}" for i in range(12))
    fake.enqueue(fakellm.text(reply, delay=0.1))
    async with a.open_stream(session, user("a long one")) as stream:
        await check_stream_headers(stream.response)
        first = await asyncio.wait_for(stream.next_chunk(), 15)
        assert first["type"] == "assistant_message"
        busy = await b.refused(session, user("me too"), wait=False)
        assert busy["metadata"]["status"] == 409
        assert "busy" in busy["error"]
        await asyncio.wait_for(stream.read_all(), 30)
    check_turn(stream.chunks)
    assert text_of(stream.chunks) == reply
    messages = (await a.history(session))["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "a long one"),
        ("assistant", reply),
    ]
    assert len(fake.requests) == 1


async def test_a_cancel_sent_to_b_stops_the_turn_running_on_a(a: Api, b: Api, fake: Any):
    session = await a.new_session(agent="coder")
    fake.enqueue(fakellm.text(" ".join(f"w{i}" for i in range(60)), delay=0.2))  # ~12 s
    async with a.open_stream(session, user("talk for a while")) as stream:
        await check_stream_headers(stream.response)
        await asyncio.wait_for(stream.next_chunk(), 15)
        cancelled = await b.post(f"/sessions/{session}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["cancelled"] is True
        asked = time.monotonic()
        await asyncio.wait_for(stream.read_all(), 8)
        took = time.monotonic() - asked
    check_turn(stream.chunks)
    last = stream.chunks[-1]
    assert last["type"] == "error" and "cancelled" in last["error"].lower()
    assert took < 6, took  # the heartbeat checks the lease every 2 s
    # The session is free again and its history is valid.
    fake.enqueue(fakellm.text("Back again."))
    assert text_of(await b.send(session, user("still there?"))) == "Back again."
    assert_strict((await b.history(session))["messages"])


async def test_a_turn_queued_behind_a_cancelled_one_waits_until_it_has_stopped(
    a: Api, b: Api, fake: Any
) -> None:
    """Cancelling frees the session only once the cancelled turn (on A) has stopped writing.

    Otherwise a turn started on B at once would run while A's turn still streams, and A's
    partial reply would land in the history after B's turn.
    """
    session = await a.new_session(agent="coder")
    fake.enqueue(
        fakellm.text(" ".join(f"w{i}" for i in range(60)), delay=0.2),
        fakellm.text("The new turn answers."),
    )
    async with a.open_stream(session, user("talk for a while")) as stream:
        await check_stream_headers(stream.response)
        await asyncio.wait_for(stream.next_chunk(), 15)
        cancelled = await b.post(f"/sessions/{session}/cancel")
        assert cancelled.json()["cancelled"] is True
        new = await b.send(session, user("something else"))  # waits behind the lease
        await asyncio.wait_for(stream.read_all(), 8)
    assert stream.chunks[-1]["type"] == "error"
    assert text_of(new) == "The new turn answers."
    messages = (await b.history(session))["messages"]
    assert_strict(messages)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"], [
        (m["role"], m["content"][:40]) for m in messages
    ]
    assert messages[0]["content"] == "talk for a while"
    assert messages[1]["content"].startswith("w0 ")  # what A streamed before it stopped
    assert messages[2]["content"] == "something else"
    assert messages[3]["content"] == "The new turn answers."


async def test_a_decision_made_on_b_reaches_a_socket_on_a(a: Api, b: Api, fake: Any) -> None:
    session = await a.new_session(agent="coder")
    cid = call_id()
    fake.enqueue(fakellm.tool_calls([(cid, "write_file", '{"path": "a.py", "content": "x"}')]))
    asked = (await a.send(session, user("write a.py")))[-1]
    assert asked["type"] == "tool_call" and asked["requires_approval"] is True
    async with ws_connect(a.runtime, session, path="/api/v1/ws/") as socket:
        decided = await b.post(
            f"/sessions/{session}/approvals/{cid}/decision",
            json={"decision": "approve", "decided_by": "staff.alice"},
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["approval"]["status"] == "approved"
        released = await socket.next_chunk(timeout=15)
        assert released["type"] == "tool_call" and released["call_id"] == cid
        assert released["requires_approval"] is False
        assert released["arguments"] == {"path": "a.py", "content": "x"}
        again = await b.post(
            f"/sessions/{session}/approvals/{cid}/decision", json={"decision": "reject"}
        )
        assert again.status_code == 409  # exactly one decision wins
        fake.enqueue(fakellm.text("Written."))
        done = await socket.turn(tool_result(cid, "written"))
    assert text_of(done) == "Written."
    assert_strict((await a.history(session))["messages"])


async def test_an_events_stream_on_a_follows_a_turn_on_b(a: Api, b: Api, fake: Any) -> None:
    session = await a.new_session(agent="coder")
    fake.enqueue(fakellm.text("Followed over HTTP.", delay=0.02))
    async with a.client.stream(
        "GET", f"{a.url}/sessions/{session}/events", headers=AUTH
    ) as response:
        await check_stream_headers(response)
        events = Stream(response=response, started=time.monotonic())
        first = await asyncio.wait_for(events.next_frame(), 10)
        assert first is not None and first.is_comment  # subscribed: the turn may start
        sse = await b.send(session, user("hello from B"))
        followed: list[dict[str, Any]] = []
        while not (followed and followed[-1]["is_final"]):
            followed.append(await asyncio.wait_for(events.next_chunk(), 15))
    check_turn(followed)
    assert text_of(followed) == text_of(sse) == "Followed over HTTP."
