"""Model failures stay where they happen, say what happened, and cut replies are marked.

Over the stream endpoint, against the real local HTTP server playing the LLM (tests/fakellm.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from agents.engine import LENGTH_NOTICE
from agents.llm import OpenAIClient, breaker_state, breaker_states, get_breaker
from sessions.models import LLMRequest, Message
from tests import fakellm
from tests.agents.test_engine import history, new_session, user
from tests.conftest import parse_sse
from tests.history import text_of

pytestmark = pytest.mark.django_db(transaction=True)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def failing(code: int, message: str, attempts: int = 2) -> list[fakellm.Script]:
    """One failed call: the first attempt and its retry (the llm fixture allows one)."""
    return [fakellm.status(code, {"error": {"message": message}})] * attempts


@sync_to_async
def llm_requests(session_id: str) -> list[LLMRequest]:
    return list(LLMRequest.objects.filter(session_id=session_id))


@sync_to_async
def stored_replies(session_id: str) -> list[Message]:
    return list(Message.objects.filter(session_id=session_id, role="assistant"))


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("LLM call failed")
    ]


# --- The breaker counts failed calls, per endpoint -----------------------------------------------


async def test_three_failing_turns_in_one_session_leave_the_others_alone(stream, llm, api):
    await new_session("s1", agent="coder")
    await new_session("s2", agent="coder")
    for _ in range(3):  # six failed attempts: the old per-attempt count opened the breaker at 5
        llm.enqueue(*failing(503, "overloaded"))
        chunks = await stream.send("s1", user("hi"))
        assert [c["type"] for c in chunks] == ["error"]

    assert len(llm.requests) == 6
    assert breaker_state() == "closed"
    assert get_breaker().fail_counter == 3

    llm.enqueue(fakellm.text("Fine here."))
    assert text_of(await stream.send("s2", user("hello"))) == "Fine here."
    assert get_breaker().fail_counter == 0  # a good call ends the run of failures
    health = (await sync_to_async(api.get)("/health")).json()
    assert health["checks"]["circuit_breaker"]["state"] == "closed"
    assert health["checks"]["circuit_breaker"]["endpoints"] == {f"127.0.0.1:{llm.port}": "closed"}


async def test_n_failed_calls_open_the_breaker_which_says_why_and_until_when(
    stream, llm, settings, caplog
):
    settings.LLM_BREAKER_FAIL_MAX = 3
    caplog.set_level(logging.WARNING, logger="agents.llm")
    await new_session("s1", agent="coder")
    await new_session("s2", agent="coder")
    for _ in range(3):
        llm.enqueue(*failing(502, "upstream is rebooting"))
        await stream.send("s1", user("hi"))
    assert breaker_state() == "open"

    (chunk,) = await stream.send("s2", user("hello"))

    assert len(llm.requests) == 6  # the refused call never reached the network
    assert chunk["type"] == "error"
    where = f"127.0.0.1:{llm.port}"
    assert re.fullmatch(
        rf"The model call failed: the model at {re.escape(where)} is not being called for now: "
        r"its circuit breaker opened at \d\d:\d\d:\d\d UTC after 3 failed calls in a row "
        rf"\(the last: The model at {re.escape(where)} answered HTTP 502: upstream is "
        r"rebooting\); it lets a call through again in (29|30) s\.",
        chunk["error"],
    ), chunk["error"]
    assert chunk["metadata"]["status"] == 503
    assert chunk["metadata"]["code"] == "llm_breaker_open"
    assert chunk["metadata"]["retry_after"] in (29, 30)
    opened = [m for r in caplog.records if (m := r.getMessage()).startswith("LLM circuit")]
    assert len(opened) == 1, opened
    assert opened[0].startswith(
        f"LLM circuit breaker for {where} opened (closed -> open) after 3 failed calls; "
        "calls are refused for 30 s: session=s1 cause=The model at "
    )
    assert caplog.records[-1].levelno == logging.WARNING
    assert failure_lines(caplog)[-1].startswith(
        f"LLM call failed: session=s2 endpoint={where} model=gpt-4o-mini status=- "
        "code=llm_breaker_open attempts=0 duration="
    )


async def test_400s_never_open_the_breaker(stream, llm, settings):
    settings.LLM_BREAKER_FAIL_MAX = 1
    await new_session("s1", agent="coder")
    for _ in range(3):
        llm.enqueue(fakellm.status(400, {"error": {"message": "tools are not supported"}}))
        (chunk,) = await stream.send("s1", user("hi"))
        assert chunk["error"] == (
            f"The model call failed: the model at 127.0.0.1:{llm.port} answered HTTP 400: "
            "tools are not supported"
        )
        assert chunk["metadata"] == {
            "status": 502,
            "code": "llm_request_rejected",
            "upstream_status": 400,
            "agent": "coder",
        }
    assert len(llm.requests) == 3  # never retried
    assert breaker_state() == "closed"


async def test_an_endpoint_that_is_down_does_not_stop_another(llm, settings):
    settings.LLM_BREAKER_FAIL_MAX = 1
    down_url = f"http://127.0.0.1:{closed_port()}"
    options: dict[str, Any] = {
        "model": "m",
        "connect_timeout": 1.0,
        "first_byte_timeout": 2.0,
        "idle_timeout": 2.0,
        "max_retries": 0,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.01,
    }
    down = OpenAIClient(base_url=down_url, breaker=get_breaker(down_url), **options)
    up = OpenAIClient(base_url=llm.url, breaker=get_breaker(llm.url), **options)
    try:
        with pytest.raises(Exception, match="connection refused"):
            await down.complete(messages=[{"role": "user", "content": "hi"}])
        assert (await up.complete(messages=[{"role": "user", "content": "hi"}])).text == "OK"
    finally:
        await down.aclose()
        await up.aclose()

    down_where = down_url.removeprefix("http://")
    assert breaker_states() == {down_where: "open", f"127.0.0.1:{llm.port}": "closed"}
    assert breaker_state() == "open"  # the summary is the worst endpoint's


async def test_the_metrics_report_each_endpoints_breaker(llm, api):
    get_breaker("http://10.0.0.9:8080").open()
    body = (await sync_to_async(api.get)("/metrics")).content.decode()
    assert 'agent_runtime_llm_breaker_open{endpoint="10.0.0.9:8080"} 1' in body
    assert f'agent_runtime_llm_breaker_open{{endpoint="127.0.0.1:{llm.port}"}} 0' in body


# --- Error chunks name the cause -----------------------------------------------------------------


async def test_a_connect_error_names_the_host_and_port(stream, llm, settings):
    port = closed_port()
    settings.LLM_BASE_URL = f"http://127.0.0.1:{port}"
    await new_session("s1", agent="coder")

    (chunk,) = await stream.send("s1", user("hi"))

    assert chunk["error"] == (
        f"The model call failed: could not connect to the model at 127.0.0.1:{port}: "
        "connection refused."
    )
    assert chunk["metadata"] == {"status": 502, "code": "llm_unreachable", "agent": "coder"}


async def test_a_timeout_names_the_limit_that_fired(stream, llm, settings):
    settings.LLM_FIRST_BYTE_TIMEOUT = 0.3
    settings.LLM_MAX_RETRIES = 0
    await new_session("s1", agent="coder")
    llm.enqueue(fakellm.hang())

    (chunk,) = await stream.send("s1", user("hi"))

    assert chunk["error"] == (
        f"The model call failed: the model at 127.0.0.1:{llm.port} did not start answering "
        "within 0.3 s (LLM_FIRST_BYTE_TIMEOUT)."
    )
    assert chunk["metadata"] == {"status": 504, "code": "llm_timeout", "agent": "coder"}


# --- Logging ------------------------------------------------------------------------------------


async def test_a_failed_call_is_logged_without_the_key_or_the_prompt(stream, llm, settings, caplog):
    settings.LLM_API_KEY = "sk-very-secret-key-4711"
    caplog.set_level(logging.WARNING, logger="agents.llm")
    await new_session("s1", agent="coder")
    llm.enqueue(*failing(500, "kaput"))

    await stream.send("s1", user("my private prompt about project zebra"))

    (line,) = failure_lines(caplog)
    assert re.fullmatch(
        rf"LLM call failed: session=s1 endpoint=127\.0\.0\.1:{llm.port} model=gpt-4o-mini "
        r"status=500 code=llm_server_error attempts=2 duration=\d+\.\d\ds "
        rf"cause=The model at 127\.0\.0\.1:{llm.port} answered HTTP 500: kaput",
        line,
    ), line
    assert llm.requests[0]["headers"]["authorization"] == "Bearer sk-very-secret-key-4711"
    logged = caplog.text
    assert "sk-very-secret-key-4711" not in logged
    assert "zebra" not in logged


# --- Honest answers ------------------------------------------------------------------------------


async def test_a_reply_cut_at_the_length_limit_is_marked_and_the_user_told(stream, llm, api):
    await new_session("s1", agent="coder")
    llm.enqueue(fakellm.text("The answer begins and", finish_reason="length"))

    chunks = await stream.send("s1", user("explain"))

    final = chunks[-1]
    assert final["type"] == "assistant_message"
    assert final["metadata"] == {"finish_reason": "length", "truncated": True}
    assert final["content"] == final["token"]
    assert final["content"] == "d" + LENGTH_NOTICE  # the held-back last character, and the notice
    assert text_of(chunks) == "The answer begins and" + LENGTH_NOTICE
    assert all(c["metadata"] is None for c in chunks[:-1])
    # Stored as the model said it, without the notice, and marked.
    assert (await history())[-1] == {"role": "assistant", "content": "The answer begins and"}
    (reply,) = await stored_replies("s1")
    assert reply.finish_reason == "length" and reply.truncated
    data = (await sync_to_async(api.get)("/sessions/s1/history")).json()
    assert data["messages"][-1]["finish_reason"] == "length"
    assert data["messages"][-1]["truncated"] is True
    usage = (await sync_to_async(api.get)("/events/metrics/session/s1")).json()
    assert usage["truncated_requests"] == 1
    assert usage["requests"][-1]["finish_reason"] == "length"
    assert usage["requests"][-1]["truncated"] is True
    metrics = (await sync_to_async(api.get)("/metrics")).content.decode()
    assert 'agent_runtime_llm_truncated_replies_total{reason="length"} 1' in metrics


async def test_a_whole_reply_is_not_marked(stream, llm, api):
    await new_session("s1", agent="coder")
    llm.enqueue(fakellm.text("All of it."))

    chunks = await stream.send("s1", user("explain"))

    assert chunks[-1]["metadata"] is None
    assert text_of(chunks) == "All of it."
    (reply,) = await stored_replies("s1")
    assert reply.finish_reason == "stop" and not reply.truncated
    data = (await sync_to_async(api.get)("/sessions/s1/history")).json()
    assert data["messages"][-1]["truncated"] is False


async def test_a_stream_cut_midway_is_marked_and_the_user_told(stream, llm, api):
    await new_session("s1", agent="coder")
    llm.enqueue(fakellm.text("Half of the answer", cut=True))

    chunks = await stream.send("s1", user("explain"))

    assert text_of(chunks) == "Half of the answer"
    error = chunks[-1]
    assert error["type"] == "error"
    assert error["error"] == (
        "The reply was cut off: the model's stream ended early: the connection to "
        f"127.0.0.1:{llm.port} broke mid-answer. What arrived so far is kept."
    )
    assert error["metadata"] == {
        "status": 502,
        "code": "llm_stream_broken",
        "agent": "coder",
        "finish_reason": "interrupted",
        "truncated": True,
    }
    (reply,) = await stored_replies("s1")
    assert reply.content == "Half of the answer"
    assert reply.finish_reason == "interrupted" and reply.truncated
    usage = (await sync_to_async(api.get)("/events/metrics/session/s1")).json()
    assert usage["truncated_requests"] == 1
    assert usage["requests"][-1]["truncated"] is True
    assert usage["requests"][-1]["success"] is False


# --- Accounting and first bytes ------------------------------------------------------------------


async def read_rest(body: Any) -> bytes:
    return b"".join([part async for part in body])


async def test_a_calls_started_at_is_when_it_began(stream, llm):
    await new_session("s1", agent="coder")
    gate = threading.Event()
    llm.enqueue(fakellm.gated(fakellm.text("Late."), gate))
    response = await stream.post("s1", user("hi"))
    reading = asyncio.ensure_future(read_rest(response.streaming_content.__aiter__()))
    while not llm.requests:  # the call has started and waits for the gate
        await asyncio.sleep(0.01)
    while_waiting = timezone.now()
    gate.set()

    assert b"Late" in await asyncio.wait_for(reading, 30)
    (call,) = await llm_requests("s1")
    assert call.started_at <= while_waiting  # the end time would be after it


async def test_headers_and_a_first_byte_go_out_before_the_routing_call_answers(
    stream, llm, settings
):
    settings.KEEPALIVE_SECONDS = 15  # the first byte must not be a keepalive fired by a timer
    await new_session("s1")  # the orchestrator: the message is routed first
    gate = threading.Event()
    llm.enqueue(fakellm.gated(fakellm.classify("coder"), gate), fakellm.text("Routed."))

    response = await stream.post("s1", user("write a function"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    body = response.streaming_content.__aiter__()
    first = await asyncio.wait_for(anext(body), 10)  # a hang here would be the defect
    assert first == b": keepalive\n\n"
    assert not gate.is_set()
    reading = asyncio.ensure_future(read_rest(body))  # as daphne reads on
    while not llm.requests:  # the routing call is under way, still unanswered
        await asyncio.sleep(0.01)
    assert llm.requests[0]["response_format"] == {"type": "json_object"}

    gate.set()
    chunks = parse_sse(await asyncio.wait_for(reading, 30))
    assert chunks[0]["metadata"]["to_agent"] == "coder"
    assert text_of(chunks) == "Routed."
