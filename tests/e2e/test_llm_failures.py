"""Model failures end to end: a real daphne, its log file, the fake LLM over TCP.

What crosses processes here: the WARNING lines daphne writes for failed calls and breaker
transitions (never the key or the prompt), /health's per-endpoint breaker, and the first bytes
of a stream reaching a real HTTP client before the routing call answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from typing import Any

import httpx
import pytest

from tests import fakellm
from tests.e2e.conftest import Api, check_stream_headers, start_runtime, text_of, user
from tests.e2e.server import Runtime

pytestmark = pytest.mark.e2e

SECRET_KEY = "sk-e2e-never-log-me-31337"


@pytest.fixture(scope="module")
def runtime(request: pytest.FixtureRequest, sqlite_url: str, fake_llm_server: Any) -> Runtime:
    return start_runtime(
        request,
        database_url=sqlite_url,
        llm_url=fake_llm_server.url,
        name="failures",
        extra_env={
            "LLM_API_KEY": SECRET_KEY,
            "LLM_BREAKER_FAIL_MAX": "2",
            "LLM_MAX_RETRIES": "1",
            "LLM_RETRY_BASE_DELAY": "0.01",
            "LLM_RETRY_MAX_DELAY": "0.02",
            # No keepalive of its own before the first-bytes test's check, and no routing
            # deadline while the test holds the routing reply back.
            "KEEPALIVE_SECONDS": "15",
            "ORCHESTRATOR_TIMEOUT_SECONDS": "60",
        },
    )


@pytest.fixture
def api(runtime: Runtime, http: httpx.AsyncClient) -> Api:
    return Api(runtime, http)


async def test_failed_calls_and_the_breaker_are_logged_and_explained(
    api: Api, runtime: Runtime, fake: Any
) -> None:
    where = f"127.0.0.1:{fake.port}"
    first = await api.new_session(agent="coder")
    other = await api.new_session(agent="coder")
    for _ in range(2):  # two failed calls, of two attempts each: FAIL_MAX=2 opens it
        fake.enqueue(*[fakellm.status(503, {"error": {"message": "model is loading"}})] * 2)
        (chunk,) = await api.send(first, user("the zebra prompt"))
        assert chunk["error"] == (
            f"The model call failed: the model at {where} answered HTTP 503: model is loading"
        )
        assert chunk["metadata"]["upstream_status"] == 503

    (refused,) = await api.send(other, user("the zebra prompt again"))

    assert len(fake.requests) == 4
    assert "its circuit breaker opened at" in refused["error"]
    assert "(the last: The model at" in refused["error"]
    assert refused["metadata"]["code"] == "llm_breaker_open"
    assert isinstance(refused["metadata"]["retry_after"], int)
    health = (await api.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["checks"]["circuit_breaker"]["endpoints"] == {where: "open"}

    log = runtime.log_path.read_text(errors="replace")
    failed = re.findall(rf"WARNING \S+ LLM call failed: session={first} .*", log)
    assert len(failed) == 2, log[-3000:]
    assert f"endpoint={where} model=" in failed[0]
    assert "status=503 code=llm_server_error attempts=2 duration=" in failed[0]
    assert re.search(
        rf"WARNING \S+ LLM circuit breaker for {re.escape(where)} opened \(closed -> open\) "
        rf"after 2 failed calls; calls are refused for 30 s: session={first} cause=The model",
        log,
    ), log[-3000:]
    assert re.search(
        rf"WARNING \S+ LLM call failed: session={other} endpoint={re.escape(where)} .*"
        "code=llm_breaker_open attempts=0",
        log,
    ), log[-3000:]
    assert fake.requests[0]["headers"]["authorization"] == f"Bearer {SECRET_KEY}"
    assert SECRET_KEY not in log
    assert "zebra" not in log


async def test_the_first_bytes_arrive_before_the_routing_call_answers(
    api: Api, fake: Any, runtime: Runtime
) -> None:
    # A fresh runtime's breaker would be open from the test above: reset by a restart.
    runtime.restart()
    session = await api.new_session()  # the orchestrator routes the first message
    gate = threading.Event()
    fake.enqueue(fakellm.gated(fakellm.classify("coder"), gate), fakellm.text("Routed here."))

    async with contextlib.AsyncExitStack() as stack:
        # Long before the runtime's own keepalive (15 s) would fire, and while the routing
        # reply is held back: the headers and the first byte came at once.
        async with asyncio.timeout(10):
            stream = await stack.enter_async_context(
                api.open_stream(session, user("write a function"))
            )
            await check_stream_headers(stream.response)
            first = await stream.next_frame()
        assert first is not None and first.raw == ": keepalive"
        assert not gate.is_set()
        while not fake.requests:  # the routing call is under way, unanswered
            await asyncio.sleep(0.01)
        assert fake.requests[0]["response_format"] == {"type": "json_object"}
        gate.set()
        chunks = await asyncio.wait_for(stream.read_all(), 30)

    assert chunks[0]["type"] == "agent_switched"
    assert chunks[0]["metadata"]["to_agent"] == "coder"
    assert text_of(chunks) == "Routed here."
