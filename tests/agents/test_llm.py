"""The OpenAI-compatible client against a real local HTTP server playing the LLM."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any

import pybreaker
import pytest
from asgiref.sync import async_to_sync

from agents.llm import (
    Completion,
    Done,
    LLMError,
    LLMProtocolError,
    LLMProvider,
    LLMTimeout,
    LLMUnavailable,
    OpenAIClient,
    StreamEvent,
    TextDelta,
    ToolCall,
    Usage,
    breaker_state,
    breaker_state_name,
    breaker_states,
    get_breaker,
    get_provider,
    reset_provider,
)
from agents.llm.wire import SSEDecoder
from tests import fakellm
from tests.fakellm import FakeLLM

MESSAGES = [{"role": "user", "content": "Hi"}]
MakeClient = Callable[..., OpenAIClient]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLM]:
    fake = FakeLLM().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server: FakeLLM) -> Iterator[FakeLLM]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
async def make_client(fake: FakeLLM) -> AsyncIterator[MakeClient]:
    clients: list[OpenAIClient] = []

    def make(**overrides: Any) -> OpenAIClient:
        options: dict[str, Any] = {
            "base_url": fake.url,
            "model": "fake-model",
            "connect_timeout": 1.0,
            "first_byte_timeout": 1.0,
            "idle_timeout": 1.0,
            "max_retries": 2,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.05,
            "breaker": pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60),
        }
        client = OpenAIClient(**{**options, **overrides})
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def collect(client: LLMProvider, **kwargs: Any) -> list[StreamEvent]:
    return [event async for event in client.stream_chat(messages=MESSAGES, **kwargs)]


def texts(events: list[StreamEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


def completion_of(events: list[StreamEvent]) -> Completion:
    assert isinstance(events[-1], Done)
    assert sum(isinstance(e, Done) for e in events) == 1
    return events[-1].completion


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Streaming ---------------------------------------------------------------------------------


async def test_it_streams_text_in_order_with_usage(fake: FakeLLM, make_client: MakeClient) -> None:
    fake.enqueue(fakellm.text("Hello brave new world"))

    events = await collect(make_client())

    assert texts(events) == ["Hello ", "brave ", "new ", "world"]
    assert completion_of(events) == Completion(
        text="Hello brave new world",
        tool_calls=[],
        usage=Usage(prompt_tokens=10, completion_tokens=4),
        finish_reason="stop",
    )
    body = fake.requests[0]
    assert body["model"] == "fake-model"
    assert body["messages"] == MESSAGES
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert not {"tools", "tool_choice", "response_format", "max_tokens"} & body.keys()


async def test_it_yields_the_first_delta_before_the_stream_ends(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(fakellm.text("one two three", delay=60.0))  # the rest comes a minute later
    events = make_client().stream_chat(messages=MESSAGES)
    assert isinstance(events, AsyncGenerator)

    async with asyncio.timeout(10):
        first = await anext(events)
    await events.aclose()

    assert first == TextDelta("one ")


async def test_it_sends_tools_and_options(fake: FakeLLM, make_client: MakeClient) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]

    await collect(
        make_client(max_tokens=64),
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
    )

    body = fake.requests[0]
    assert body["tools"] == tools
    assert body["tool_choice"] == "auto"
    assert body["response_format"] == {"type": "json_object"}
    assert body["max_tokens"] == 64


async def test_it_assembles_parallel_tool_calls_split_across_chunks(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    calls = [
        ("call_1", "read_file", '{"path": "src/main.py"}'),
        ("call_2", "list_directory", '{"path": "."}'),
    ]
    fake.enqueue(fakellm.tool_calls(calls, text_before="Let me look.", split=4, interleave=True))

    events = await collect(make_client())

    completion = completion_of(events)
    assert completion.text == "Let me look."
    assert completion.tool_calls == [ToolCall(*call) for call in calls]
    assert completion.finish_reason == "tool_calls"


async def test_it_does_not_duplicate_a_repeated_tool_name(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(
        fakellm.tool_calls(
            [("c1", "write_file", '{"path": "a", "content": "b"}')], repeat_name=True
        )
    )

    completion = completion_of(await collect(make_client()))

    assert completion.tool_calls == [ToolCall("c1", "write_file", '{"path": "a", "content": "b"}')]


async def test_it_parses_multiline_data_comments_and_crlf(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(fakellm.multiline())

    events = await collect(make_client())

    assert "".join(texts(events)) == fakellm.MULTILINE_TEXT
    assert completion_of(events).usage == Usage(3, 3)


def test_it_decodes_sse_fed_one_byte_at_a_time() -> None:
    raw = (
        b"\xef\xbb\xbf: comment\r\nevent: x\r\ndata:  two spaces\r\ndata:none\r\n\r\n"
        b"data: a\rdata: b\r\rdata: \xe2\x80\xa8 sep\n\nid: 7\ndata: [DONE]\n\n"
    )
    decoder = SSEDecoder()
    events = [e for i in range(len(raw)) for e in decoder.feed(raw[i : i + 1])]

    assert events == [" two spaces\nnone", "a\nb", "\u2028 sep", "[DONE]"]


async def test_it_keeps_unicode_line_separators_inside_data(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    reply = "line\u2028separated\x85 ünïcode"
    fake.enqueue(fakellm.text(reply, chunk_size=5))

    assert completion_of(await collect(make_client())).text == reply


async def test_it_accepts_a_non_streaming_json_reply(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(fakellm.json_reply("Hi there", tool_calls=[("c1", "f", {"x": 1})]))

    events = await collect(make_client())

    assert texts(events) == ["Hi there"]
    completion = completion_of(events)
    assert completion.tool_calls[0].id == "c1"
    assert json.loads(completion.tool_calls[0].arguments) == {"x": 1}
    assert completion.usage is not None


async def test_it_accepts_a_stream_without_done_after_a_finish_reason(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(fakellm.text("all here", done=False))

    assert completion_of(await collect(make_client())).text == "all here"


async def test_it_completes_by_draining_the_stream(fake: FakeLLM, make_client: MakeClient) -> None:
    fake.enqueue(fakellm.classify("coder", 0.8))

    completion = await make_client().complete(messages=MESSAGES)

    assert json.loads(completion.text)["agent"] == "coder"


# --- Errors and retries --------------------------------------------------------------------------


async def test_it_retries_a_429_honouring_retry_after(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(fakellm.status(429, headers={"Retry-After": "0.3"}), fakellm.text("ok"))
    started = time.monotonic()

    events = await collect(make_client())

    assert completion_of(events).text == "ok"
    assert time.monotonic() - started >= 0.3
    assert len(fake.requests) == 2


async def test_it_retries_server_errors(fake: FakeLLM, make_client: MakeClient) -> None:
    fake.enqueue(fakellm.status(500), fakellm.status(502), fakellm.text("ok"))

    assert completion_of(await collect(make_client())).text == "ok"
    assert len(fake.requests) == 3


async def test_it_raises_the_last_error_after_the_retries(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(*[fakellm.status(503, {"error": {"message": "overloaded"}})] * 3)

    with pytest.raises(LLMError) as caught:
        await collect(make_client(max_retries=2))

    assert caught.value.status == 503
    assert str(caught.value) == f"The model at 127.0.0.1:{fake.port} answered HTTP 503: overloaded"
    assert len(fake.requests) == 3


async def test_it_does_not_retry_a_400(fake: FakeLLM, make_client: MakeClient) -> None:
    fake.enqueue(fakellm.status(400, {"error": {"message": "bad request " + "x" * 500}}))

    with pytest.raises(LLMError) as caught:
        await collect(make_client())

    assert caught.value.status == 400
    assert not caught.value.retryable
    assert str(caught.value).startswith(
        f"The model at 127.0.0.1:{fake.port} answered HTTP 400: bad request xxx"
    )
    assert len(str(caught.value)) < 280
    assert len(fake.requests) == 1


async def test_it_rejects_garbage_instead_of_showing_it(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(fakellm.garbage())
    events: list[StreamEvent] = []

    with pytest.raises(LLMProtocolError):
        async for event in make_client().stream_chat(messages=MESSAGES):
            events.append(event)

    assert events == []
    assert len(fake.requests) == 1


async def test_it_fails_a_dropped_stream_without_retrying(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(fakellm.drop_after(3))
    events: list[StreamEvent] = []

    with pytest.raises(LLMProtocolError, match="ended early"):
        async for event in make_client().stream_chat(messages=MESSAGES):
            events.append(event)

    assert texts(events) == ["tok0 ", "tok1 ", "tok2 "]
    assert len(fake.requests) == 1


async def test_it_times_out_a_server_that_never_answers(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(fakellm.hang())
    started = time.monotonic()

    with pytest.raises(LLMTimeout, match="did not start answering within 0.3 s"):
        await collect(make_client(first_byte_timeout=0.3))

    assert 0.3 <= time.monotonic() - started < 0.8
    assert len(fake.requests) == 1


async def test_it_times_out_a_stalled_stream(fake: FakeLLM, make_client: MakeClient) -> None:
    fake.enqueue(fakellm.text("one two", delay=0.6))
    events: list[StreamEvent] = []

    with pytest.raises(LLMTimeout, match="stalled"):
        async for event in make_client(idle_timeout=0.2).stream_chat(messages=MESSAGES):
            events.append(event)

    assert texts(events) == ["one "]


async def test_time_spent_between_reads_is_not_idle_time(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    fake.enqueue(fakellm.text("one two three four"))
    events: list[StreamEvent] = []
    async for event in make_client(idle_timeout=0.2).stream_chat(messages=MESSAGES):
        events.append(event)
        await asyncio.sleep(0.3)  # a slow caller, not a slow model
    assert texts(events) == ["one ", "two ", "three ", "four"]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # nothing left cancelled behind us


async def test_it_retries_connection_failures_and_counts_the_call_once(
    make_client: MakeClient,
) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=10)
    port = closed_port()
    client = make_client(base_url=f"http://127.0.0.1:{port}", breaker=breaker)

    with pytest.raises(LLMError) as caught:
        await collect(client)

    assert str(caught.value) == (
        f"Could not connect to the model at 127.0.0.1:{port}: connection refused."
    )
    assert caught.value.retryable
    assert caught.value.code == "llm_unreachable"
    assert breaker.fail_counter == 1  # one call, though it made three attempts


# --- Circuit breaker ----------------------------------------------------------------------------


async def test_it_opens_the_breaker_and_then_fails_fast(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    client = make_client(breaker=breaker, max_retries=0)
    fake.enqueue(fakellm.status(500), fakellm.status(500), fakellm.text("never sent"))

    for _ in range(2):
        with pytest.raises(LLMError, match="HTTP 500"):
            await collect(client)
    assert breaker.current_state == "open"
    with pytest.raises(LLMUnavailable) as caught:
        await collect(client)

    message = str(caught.value)
    assert message.startswith(
        f"The model at 127.0.0.1:{fake.port} is not being called for now: its circuit "
        "breaker opened at "
    )
    assert "UTC after 2 failed calls in a row (the last: The model at" in message
    assert "answered HTTP 500: fake upstream error 500)" in message
    assert re.search(r"it lets a call through again in (59|60) s\.$", message), message
    assert caught.value.chunk_metadata() == {
        "status": 503,
        "code": "llm_breaker_open",
        "retry_after": caught.value.chunk_metadata()["retry_after"],
    }
    assert 59 <= caught.value.chunk_metadata()["retry_after"] <= 60
    assert len(fake.requests) == 2


async def test_a_failing_call_counts_once_however_many_attempts_it_made(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    fake.enqueue(*[fakellm.status(500)] * 4)

    with pytest.raises(LLMError, match="HTTP 500"):
        await collect(make_client(breaker=breaker, max_retries=3))

    assert len(fake.requests) == 4
    assert breaker.fail_counter == 1
    assert breaker.current_state == "closed"


async def test_it_stops_retrying_once_other_calls_trip_the_breaker(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    fake.enqueue(*[fakellm.status(500, headers={"Retry-After": "0.5"})] * 5)
    call = asyncio.create_task(collect(make_client(breaker=breaker, max_retries=5)))
    while not fake.requests:  # the first attempt has been answered; its retry waits
        await asyncio.sleep(0.01)

    breaker.open()  # as other sessions' failed calls would

    with pytest.raises(LLMError, match="HTTP 500"):
        await call
    assert len(fake.requests) == 1


async def test_it_counts_mid_stream_failures_against_the_breaker(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    client = make_client(breaker=breaker)
    fake.enqueue(fakellm.drop_after(1), fakellm.drop_after(1))

    for _ in range(2):
        with pytest.raises(LLMProtocolError):
            await collect(client)

    with pytest.raises(LLMUnavailable):
        await collect(client)
    assert len(fake.requests) == 2


async def test_it_does_not_count_client_errors_against_the_breaker(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    fake.enqueue(fakellm.status(401, {"error": {"message": "invalid api key"}}))

    with pytest.raises(LLMError, match="invalid api key"):
        await collect(make_client(breaker=breaker))

    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 0


async def test_it_does_not_count_a_cancelled_call_as_a_failure(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    client = make_client(breaker=breaker, first_byte_timeout=5.0)
    fake.enqueue(fakellm.hang())

    task = asyncio.create_task(collect(client))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 0
    assert completion_of(await collect(client)).text == "OK"


async def test_it_does_not_count_a_caller_that_stops_reading(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    client = make_client(breaker=breaker)
    fake.enqueue(fakellm.tokens(50))

    stream = client.stream_chat(messages=MESSAGES)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]

    assert breaker.current_state == "closed"
    assert completion_of(await collect(client)).text == "OK"


async def test_it_closes_the_breaker_after_a_good_trial_call(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0.05)
    client = make_client(breaker=breaker, max_retries=0)
    fake.enqueue(fakellm.status(500))
    with pytest.raises(LLMError):
        await collect(client)
    assert breaker.current_state == "open"

    await asyncio.sleep(0.06)

    assert completion_of(await collect(client)).text == "OK"
    assert breaker.current_state == "closed"


# --- Headers and health ---------------------------------------------------------------------------


async def test_it_sends_authorization_only_when_a_key_is_set(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    await collect(make_client())
    await collect(make_client(api_key="sk-test"))

    assert "authorization" not in fake.requests[0]["headers"]
    assert fake.requests[1]["headers"]["authorization"] == "Bearer sk-test"
    assert "x-internal-auth" not in fake.requests[1]["headers"]


async def test_it_sends_internal_auth_when_configured(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    client = make_client(internal_auth="internal-secret")

    await collect(client)

    assert fake.requests[0]["headers"]["x-internal-auth"] == "internal-secret"
    assert "internal-secret" not in repr(client)


async def test_it_keeps_no_cookies_a_model_server_sets(
    fake: FakeLLM, make_client: MakeClient
) -> None:
    cookie = (("Set-Cookie", "lb=node-7; Path=/"),)
    fake.enqueue(dataclasses.replace(fakellm.text("one"), headers=cookie), fakellm.text("two"))
    client = make_client()

    await collect(client)
    await collect(client)

    assert "cookie" not in fake.requests[1]["headers"]


async def test_it_reports_health(fake: FakeLLM, make_client: MakeClient) -> None:
    healthy = await make_client().check_health()
    fake.models_status = 503
    failing = await make_client().check_health()
    port = closed_port()
    unreachable = await make_client(base_url=f"http://127.0.0.1:{port}").check_health()

    assert healthy["status"] == "ok"
    assert healthy["breaker"] == "closed"
    assert failing["status"] == "error"
    assert failing["detail"] == f"the LLM at 127.0.0.1:{fake.port} answered HTTP 503 to /v1/models"
    assert unreachable["status"] == "error"
    assert unreachable["detail"] == (
        f"cannot connect to the LLM at 127.0.0.1:{port}: connection refused"
    )
    assert fake.requests == []  # health checks are not chat requests


async def test_it_reuses_connections(fake: FakeLLM, make_client: MakeClient) -> None:
    client = make_client()

    for _ in range(3):
        await collect(client)

    assert len(fake.requests) == 3
    assert fake.connections == 1


async def test_it_goes_through_the_proxy_the_environment_names(
    fake: FakeLLM, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake.url)  # the fake answers a proxy request itself
    fake.enqueue(fakellm.text("via the proxy"), fakellm.text("again"))
    client = make_client(base_url="http://llm.invalid:9/v1")  # no such host: only the proxy works

    assert "".join(texts(await collect(client))) == "via the proxy"
    assert "".join(texts(await collect(client))) == "again"
    assert fake.proxied == ["http://llm.invalid:9", "http://llm.invalid:9"]


async def test_it_bypasses_the_proxy_for_no_proxy_hosts(
    fake: FakeLLM, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # a dead proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    fake.enqueue(fakellm.text("direct"))

    assert "".join(texts(await collect(make_client()))) == "direct"
    assert fake.proxied == []


# --- The process-wide provider ------------------------------------------------------------------


class StubProvider(LLMProvider):
    label = "stub"


def test_it_builds_the_provider_from_settings(settings: Any, fake: FakeLLM) -> None:
    settings.LLM_BASE_URL = fake.url
    settings.LLM_API_KEY = "sk-x"
    settings.LLM_SEND_INTERNAL_AUTH = True
    settings.INTERNAL_API_KEY = "internal"
    settings.LLM_BREAKER_FAIL_MAX = 3
    reset_provider()
    try:
        provider = get_provider()

        assert isinstance(provider, OpenAIClient)
        assert get_provider() is provider
        assert provider.breaker is get_breaker()
        assert provider.breaker is get_breaker(fake.url)
        assert get_breaker().fail_max == 3
        assert get_breaker().name == f"127.0.0.1:{fake.port}"
        assert breaker_states() == {f"127.0.0.1:{fake.port}": "closed"}
        assert breaker_state() == "closed"
        assert completion_of(async_to_sync(collect)(provider)).text == "OK"
        assert fake.requests[0]["headers"]["authorization"] == "Bearer sk-x"
        assert fake.requests[0]["headers"]["x-internal-auth"] == "internal"
    finally:
        reset_provider()


def test_it_falls_back_to_the_demo_provider(settings: Any) -> None:
    settings.LLM_BASE_URL = ""
    settings.LLM_DEMO_PROVIDER = "tests.agents.test_llm.StubProvider"
    reset_provider()
    try:
        assert isinstance(get_provider(), StubProvider)
    finally:
        reset_provider()


def test_it_reports_an_open_breaker_as_half_open_once_its_timeout_passes() -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0.05)
    breaker.open()

    assert breaker_state_name(breaker) == "open"
    time.sleep(0.06)
    assert breaker_state_name(breaker) == "half-open"
