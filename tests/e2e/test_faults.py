"""Faults in the production configuration: a real daphne on PostgreSQL and Redis, each reached
through a fault-injecting proxy (tests/faultproxy.py), and the fake LLM.

What must hold: one turn per session even when the database blinks; what the client saw as a
complete answer is what history holds (or the client got an error); the session is usable as
soon as the database is back; with Redis down every request gets a clear answer, and all of it
recovers by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import websockets

from tests import fakellm
from tests.e2e.conftest import (
    AUTH,
    Api,
    assert_strict,
    check_chunk_json,
    check_turn,
    start_runtime,
    text_of,
    tool_result,
    user,
    wait_for,
    ws_connect,
)
from tests.e2e.server import Runtime
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e


def through(proxy: FaultProxy, url: str, query: str = "") -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    netloc_text = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    return urlunsplit(parts._replace(netloc=netloc_text, query=query))


@pytest.fixture(scope="module")
def pg_proxy() -> Iterator[FaultProxy]:
    from tests.services import postgres_url, require_postgres

    require_postgres()
    parts = urlsplit(postgres_url())
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def redis_proxy(redis_env: dict[str, str]) -> Iterator[FaultProxy]:
    parts = urlsplit(redis_env["REDIS_URL"])
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def start_faulty(
    request: pytest.FixtureRequest,
    postgres_db: str,
    pg_proxy: FaultProxy,
    redis_env: dict[str, str],
    redis_proxy: FaultProxy,
    fake_llm_server: Any,
) -> Callable[..., Runtime]:
    """Starts a daphne that reaches PostgreSQL and Redis through the proxies."""

    def start(**env: str) -> Runtime:
        pg_proxy.up()
        redis_proxy.up()
        return start_runtime(
            request,
            # sslmode=disable: the proxy must see the queries to fail on one of them.
            database_url=through(pg_proxy, postgres_db, "sslmode=disable"),
            redis_url=through(redis_proxy, redis_env["REDIS_URL"]),
            llm_url=fake_llm_server.url,
            extra_env={k: v for k, v in redis_env.items() if k != "REDIS_URL"} | env,
        )

    return start


@pytest.fixture(scope="module")
def runtime(start_faulty: Callable[..., Runtime]) -> Runtime:
    return start_faulty(TURN_LOCK_WAIT_SECONDS="30", RATELIMIT_ENABLE="true")


@pytest.fixture
def api(runtime: Runtime, http: httpx.AsyncClient, pg_proxy: FaultProxy) -> Iterator[Api]:
    yield Api(runtime, http)
    pg_proxy.up()


async def roles_and_texts(api: Api, session: str) -> list[tuple[str, str]]:
    messages = (await api.history(session))["messages"]
    assert_strict(messages)
    return [(m["role"], m["content"]) for m in messages]


async def test_a_database_blip_mid_turn_lets_no_second_turn_in_and_loses_nothing(
    api: Api, pg_proxy: FaultProxy, fake: Any
) -> None:
    session = await api.new_session(agent="coder")
    reply = " ".join(f"t{i}" for i in range(60))
    fake.enqueue(fakellm.text(reply, delay=0.05), fakellm.text("Second answer."))
    async with api.open_stream(session, user("first")) as stream:
        assert (await asyncio.wait_for(stream.next_chunk(), 15))["type"] == "assistant_message"
        pg_proxy.blip(2.5)
        # Sent during the outage: it must queue behind the first turn, never run beside it.
        second = asyncio.create_task(api.send(session, user("second")))
        await asyncio.wait_for(stream.read_all(), 30)
    check_turn(stream.chunks)
    second_chunks = await asyncio.wait_for(second, 40)
    assert text_of(second_chunks) == "Second answer."
    history = await roles_and_texts(api, session)
    if stream.chunks[-1]["type"] == "error":  # allowed: the client was told
        assert [role for role, _ in history][-2:] == ["user", "assistant"]
    else:  # the whole answer was shown, so the whole answer was kept, before the second turn
        assert text_of(stream.chunks) == reply
        assert history == [
            ("user", "first"),
            ("assistant", reply),
            ("user", "second"),
            ("assistant", "Second answer."),
        ]


async def test_a_blip_during_release_leaves_the_session_usable_at_once(
    api: Api, pg_proxy: FaultProxy, fake: Any
) -> None:
    session = await api.new_session(agent="coder")
    fake.enqueue(fakellm.tool_calls([("c1", "read_file", '{"path": "a.py"}')]))
    # The release is the one query that sets the expiry to NULL: fail right there.
    pg_proxy.blip_on(b'"turn_expires_at" = NULL', 2.0)
    chunks = await api.send(session, user("read a.py"))
    assert chunks[-1]["type"] == "tool_call"
    assert pg_proxy.triggered.is_set()
    # No lease-TTL (30 s) wait: the release went through once the database was back.
    fake.enqueue(fakellm.text("Read it."))
    started = time.monotonic()
    done = await api.send(session, tool_result("c1", "print(1)"), wait=False)
    assert text_of(done) == "Read it.", done
    assert time.monotonic() - started < 10
    assert [role for role, _ in await roles_and_texts(api, session)] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


async def test_a_long_outage_stops_the_turn_with_an_error_before_its_lease_can_lapse(
    start_faulty: Callable[..., Runtime],
    pg_proxy: FaultProxy,
    fake: Any,
    http: httpx.AsyncClient,
) -> None:
    short = start_faulty(TURN_LOCK_TTL_SECONDS="4", DB_RETRY_SECONDS="3")
    api = Api(short, http)
    session = await api.new_session(agent="coder")
    fake.enqueue(fakellm.text(" ".join(f"w{i}" for i in range(80)), delay=0.1))
    async with api.open_stream(session, user("a long answer")) as stream:
        await asyncio.wait_for(stream.next_chunk(), 15)
        pg_proxy.blip(6.0)  # longer than the lease's 4 s
        await asyncio.wait_for(stream.read_all(), 40)
    check_turn(stream.chunks)
    last = stream.chunks[-1]
    assert last["type"] == "error", last
    assert "database" in last["error"], last
    # Usable again once the database is back, and its history is valid.
    pg_proxy.up()
    fake.enqueue(fakellm.text("Back."))
    again = await api.send(session, user("again"))
    assert text_of(again) == "Back."
    history = await roles_and_texts(api, session)
    assert history[0] == ("user", "a long answer") and history[-1] == ("assistant", "Back.")
    assert [role for role, _ in history].count("user") == 2


async def test_redis_down_gets_clear_answers_and_everything_recovers(
    api: Api, runtime: Runtime, redis_proxy: FaultProxy, fake: Any, http: httpx.AsyncClient
) -> None:
    session = await api.new_session(agent="coder")
    assert (await http.get(f"{runtime.url}/ready")).status_code == 200
    redis_proxy.down()
    try:
        ready = await http.get(f"{runtime.url}/ready")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["cache"]["status"] == checks["channel_layer"]["status"] == "error"
        assert checks["database"]["status"] == "ok"
        health = await http.get(f"{runtime.url}/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        refused = await api.refused(session, user("hello?"))
        assert refused["metadata"]["status"] == 503
        assert "Redis" in refused["error"]
        events = await http.get(f"{runtime.url}/sessions/{session}/events", headers=AUTH)
        assert events.status_code == 503
        assert "Redis" in events.json()["detail"]
        async with websockets.connect(
            f"{runtime.ws_url}/ws/{session}", additional_headers=AUTH, proxy=None
        ) as socket:
            frame = await asyncio.wait_for(socket.recv(), 10)
            assert isinstance(frame, str), frame
            error = check_chunk_json(frame)
            assert error["type"] == "error" and "Redis" in error["error"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4503
    finally:
        redis_proxy.up()

    async def ready_again() -> bool:
        return (await http.get(f"{runtime.url}/ready")).status_code == 200

    assert await wait_for(ready_again, 20)
    fake.enqueue(fakellm.text("Back again."))
    async with ws_connect(runtime, session) as follower:  # sockets follow the session again
        sse = await api.send(session, user("hello again"))
        relayed = await follower.until_final(timeout=15)
    assert text_of(sse) == text_of(relayed) == "Back again."
    async with http.stream(
        "GET", f"{runtime.url}/sessions/{session}/events", headers=AUTH
    ) as events:
        assert events.status_code == 200
