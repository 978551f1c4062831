"""The OpenAI-compatible streaming client: timeouts, retries and the circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import pybreaker

from agents.llm.base import (
    ENDED_EARLY_MESSAGE,
    UNAVAILABLE_MESSAGE,
    Completion,
    Done,
    LLMError,
    LLMProtocolError,
    LLMProvider,
    LLMTimeout,
    LLMUnavailable,
    StreamEvent,
    TextDelta,
)
from agents.llm.transport import Transport
from agents.llm.wire import (
    MAX_CONNECTIONS,
    MAX_ERROR_BODY_BYTES,
    MAX_JSON_BODY_BYTES,
    SSEDecoder,
    StreamState,
    counts_against_breaker,
    drain,
    parse_json_reply,
    status_error,
)

logger = logging.getLogger(__name__)
HEALTH_TIMEOUT_SECONDS = 2.0


class _IdleWatch:
    """The idle timeout of one stream: one timer, not a timeout context per chunk.

    A stream of 2,000 deltas would otherwise enter and leave 2,000 timeout contexts. The timer
    cancels the reading task only while a read is pending and has waited ``limit`` seconds; time
    the caller spends between reads never counts.
    """

    def __init__(self, limit: float) -> None:
        """Made in the task that reads the stream (the one the timer cancels)."""
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self.reading_since: float | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.fired = False

    def start_read(self) -> None:
        self.reading_since = self.loop.time()
        if self.handle is None:
            self.handle = self.loop.call_at(self.reading_since + self.limit, self._check)

    def end_read(self) -> None:
        self.reading_since = None

    def _check(self) -> None:
        self.handle = None
        if self.reading_since is None or self.task is None:
            return  # not reading now: the next read arms the timer again
        due = self.reading_since + self.limit
        if self.loop.time() >= due:
            self.fired = True
            self.task.cancel()
        else:
            self.handle = self.loop.call_at(due, self._check)

    def absorb(self) -> None:
        """The cancellation was ours, not the caller's: take it back before raising."""
        if self.task is not None:
            self.task.uncancel()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def breaker_state_name(breaker: pybreaker.CircuitBreaker) -> str:
    state = str(breaker.current_state)
    if state == pybreaker.STATE_OPEN:
        # pybreaker only moves to half-open on the next call; report it as soon as a trial call
        # would be let through, so an idle server's /health does not stay "open" forever.
        opened_at = getattr(getattr(breaker, "_state_storage", None), "opened_at", None)
        if opened_at is not None:
            elapsed = time.time() - opened_at.timestamp()
            if elapsed >= breaker.reset_timeout:
                return pybreaker.STATE_HALF_OPEN
    return state


# --- The OpenAI-compatible client ---------------------------------------------------------------


class OpenAIClient(LLMProvider):
    label = "openai-compatible"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "",
        model: str,
        internal_auth: str = "",
        connect_timeout: float,
        first_byte_timeout: float,
        idle_timeout: float,
        max_retries: int,
        retry_base_delay: float,
        retry_max_delay: float,
        breaker: pybreaker.CircuitBreaker,
        max_tokens: int = 0,
    ) -> None:
        base = base_url.rstrip("/").removesuffix("/v1")  # tolerate ".../v1" as the base URL
        # Fail at startup, not on the first turn, when LLM_BASE_URL is not an http(s) URL.
        if httpx.URL(base or "/").scheme not in {"http", "https"}:
            raise ValueError("The LLM base URL must be an http:// or https:// URL.")
        self.base_url = base
        self.model = model
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.max_retries = max(0, max_retries)
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self.breaker = breaker
        self.max_tokens = max_tokens
        self._chat_url = f"{base}/v1/chat/completions"
        self._models_url = f"{base}/v1/models"
        self._auth_headers: dict[str, str] = {}
        if api_key:
            self._auth_headers["Authorization"] = f"Bearer {api_key}"
        if internal_auth:
            self._auth_headers["X-Internal-Auth"] = internal_auth
        self._http: httpx.AsyncClient | None = None
        self._tls: ssl.SSLContext | None = None
        self._http_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def __repr__(self) -> str:  # never show the keys
        return f"<OpenAIClient {self.base_url} model={self.model}>"

    def _client(self) -> httpx.AsyncClient:
        """This event loop's client. Pooled connections belong to the loop that opened them;
        under daphne there is one loop, but tests and ``async_to_sync`` callers run several
        over the life of the process."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is None or self._http_loop() is not loop:
            if self._tls is None:  # loading the CA bundle takes tens of ms: once per client
                self._tls = httpx.create_ssl_context()
            self._http = httpx.AsyncClient(
                transport=Transport(tls=self._tls, max_connections=MAX_CONNECTIONS),
                # Reads are bounded by the first-byte and idle deadlines below, not by httpx.
                timeout=httpx.Timeout(
                    connect=self.connect_timeout,
                    read=None,
                    write=self.connect_timeout,
                    pool=self.connect_timeout,
                ),
            )
            self._http_loop = weakref.ref(loop)
        return self._http

    async def aclose(self) -> None:
        http, self._http, self._http_loop = self._http, None, None
        if http is not None:
            with contextlib.suppress(Exception):  # its loop may be gone already
                await http.aclose()

    def _payload(
        self,
        *,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
        response_format: dict[str, Any] | None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            payload["tools"] = tools
            # OpenAI rejects tool_choice without tools, so it only goes along with them.
            if tool_choice is not None:
                payload["tool_choice"] = tool_choice
        if response_format is not None:
            payload["response_format"] = response_format
        if self.max_tokens > 0:
            payload["max_tokens"] = self.max_tokens
        return payload

    async def stream_chat(
        self,
        *,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        payload = self._payload(
            messages=messages, tools=tools, tool_choice=tool_choice, response_format=response_format
        )
        for attempt in itertools.count():
            yielded = False
            completion: Completion | None = None
            failure: LLMError | None = None  # this attempt's error that the breaker counts
            passthrough: BaseException | None = None  # re-raised after a neutral breaker exit
            try:
                # One breaker call per HTTP attempt, settled when the attempt ends: recording a
                # success at the 200 would reset the failure count and a server that always
                # drops mid-stream would never trip the breaker.
                with self.breaker.calling():
                    try:
                        async with contextlib.aclosing(self._attempt(payload)) as events:
                            async for event in events:
                                if isinstance(event, Completion):
                                    completion = event
                                else:
                                    yielded = True
                                    yield event
                    except LLMError as exc:
                        if counts_against_breaker(exc):
                            failure = exc
                            raise
                        passthrough = exc
                    except (asyncio.CancelledError, GeneratorExit) as exc:
                        # The client went away or stopped reading: that says nothing about
                        # the upstream's health, so it is not a failure. pybreaker has no
                        # neutral outcome, so leaving the block normally records a success.
                        passthrough = exc
            except pybreaker.CircuitBreakerError:
                if failure is None:  # refused on entry: fail fast, no network
                    raise LLMUnavailable(UNAVAILABLE_MESSAGE) from None
                raise failure from None  # this failure tripped it: report the real cause
            except LLMError as exc:
                tripped = self.breaker.current_state == pybreaker.STATE_OPEN
                # Never retry once text reached the caller: it cannot take it back.
                if yielded or tripped or not exc.retryable or attempt >= self.max_retries:
                    raise
                delay = random.uniform(
                    0, min(self.retry_max_delay, self.retry_base_delay * 2**attempt)
                )
                if exc.retry_after is not None:
                    delay = exc.retry_after
                logger.warning(
                    "LLM attempt %d failed (%s); retrying in %.2f s", attempt + 1, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            if passthrough is not None:
                raise passthrough
            assert completion is not None  # _attempt always ends with one or raises
            yield Done(completion)
            return

    async def _attempt(
        self, payload: dict[str, Any]
    ) -> AsyncGenerator[TextDelta | Completion, None]:
        """One HTTP request: TextDeltas as they arrive, then the Completion; LLMError on failure."""
        loop = asyncio.get_running_loop()
        # The first-byte deadline covers connecting, the response headers and the first event.
        deadline = loop.time() + self.first_byte_timeout
        response = await self._send(self._client(), payload, deadline)
        watch = _IdleWatch(self.idle_timeout)
        try:
            chunks = response.aiter_bytes()
            content_type = response.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() == "application/json":
                body = bytearray()
                while (
                    chunk := await self._read(chunks, None if body else deadline, watch)
                ) is not None:
                    body += chunk
                    if len(body) > MAX_JSON_BODY_BYTES:
                        raise LLMProtocolError("The LLM's reply is too large.")
                completion = parse_json_reply(bytes(body))
                if completion.text:
                    yield TextDelta(completion.text)
                yield completion
                return

            decoder, state = SSEDecoder(), StreamState()
            while not state.done:
                try:
                    chunk = await self._read(chunks, deadline if not state.events else None, watch)
                except (LLMProtocolError, LLMTimeout):
                    if state.finish_reason:  # the reply is complete; only [DONE]/usage is lost
                        break
                    raise
                if chunk is None:
                    # A server may end without a blank line after its last event.
                    pending = decoder.pending()
                    if pending is not None:
                        with contextlib.suppress(LLMProtocolError):
                            state.add_event(pending)
                    break
                for data in decoder.feed(chunk):
                    text = state.add_event(data)
                    if text:
                        yield TextDelta(text)
                    if state.done:
                        break
            if not state.done and not state.finish_reason:
                raise LLMProtocolError(ENDED_EARLY_MESSAGE)
            if state.done:
                await drain(chunks)
            yield state.completion()
        finally:
            watch.close()
            with contextlib.suppress(Exception):
                await response.aclose()

    async def _read(
        self, chunks: AsyncIterator[bytes], deadline: float | None, watch: _IdleWatch
    ) -> bytes | None:
        """The next body chunk (None at the end) within the first-byte deadline or idle timeout."""
        if deadline is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    return await anext(chunks, None)
            except httpx.HTTPError as exc:  # the connection dropped mid-body
                raise LLMProtocolError(ENDED_EARLY_MESSAGE) from exc
            except TimeoutError:
                raise LLMTimeout(
                    f"The LLM did not start answering within {self.first_byte_timeout:g} s."
                ) from None
        watch.start_read()
        try:
            return await anext(chunks, None)
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            watch.absorb()
            raise LLMTimeout(
                f"The LLM stream stalled for more than {self.idle_timeout:g} s."
            ) from None
        except httpx.HTTPError as exc:  # the connection dropped mid-body
            raise LLMProtocolError(ENDED_EARLY_MESSAGE) from exc
        finally:
            watch.end_read()

    async def _send(
        self, client: httpx.AsyncClient, payload: dict[str, Any], deadline: float
    ) -> httpx.Response:
        """POST the request; return the 200 response with its body still unread."""
        request = client.build_request(
            "POST",
            self._chat_url,
            json=payload,
            headers={"Accept": "text/event-stream, application/json", **self._auth_headers},
        )
        try:
            async with asyncio.timeout_at(deadline):
                response = await client.send(request, stream=True)
        except TimeoutError:
            raise LLMTimeout(
                f"The LLM did not start answering within {self.first_byte_timeout:g} s."
            ) from None
        except httpx.ConnectTimeout:
            raise LLMTimeout(
                f"Timed out connecting to the LLM after {self.connect_timeout:g} s.",
                retryable=True,
            ) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            # Nothing was answered yet (refused, reset, or a stale keep-alive connection).
            raise LLMError("Could not reach the LLM.", retryable=True) from None
        except httpx.HTTPError as exc:
            raise LLMError(f"The LLM request failed ({type(exc).__name__}).") from None
        if response.status_code == 200:
            return response
        body = b""
        try:
            async with asyncio.timeout(min(self.first_byte_timeout, 5.0)):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ERROR_BODY_BYTES:
                        break
        except (TimeoutError, httpx.HTTPError):
            pass  # the status alone is enough to report
        finally:
            with contextlib.suppress(Exception):
                await response.aclose()
        raise status_error(response.status_code, body, response.headers)

    async def check_health(self) -> dict[str, Any]:
        """A cheap GET /v1/models; never raises."""
        breaker = breaker_state_name(self.breaker)
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                response = await self._client().get(
                    self._models_url, headers=self._auth_headers, timeout=HEALTH_TIMEOUT_SECONDS
                )
        except Exception as exc:  # a health check reports, it does not raise
            detail = f"cannot reach the LLM ({type(exc).__name__})"
            return {"status": "error", "detail": detail, "breaker": breaker}
        if response.status_code != 200:
            detail = f"the LLM answered HTTP {response.status_code} to /v1/models"
            return {"status": "error", "detail": detail, "breaker": breaker}
        return {"status": "ok", "detail": f"reachable; model {self.model}", "breaker": breaker}
