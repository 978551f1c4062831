"""The OpenAI-compatible streaming client: timeouts, retries and the circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import random
import socket
import ssl
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import pybreaker

from agents.chunks import dumps_bytes
from agents.llm.base import (
    ENDED_EARLY_MESSAGE,
    Completion,
    Done,
    LLMError,
    LLMProtocolError,
    LLMProvider,
    LLMStreamBroken,
    LLMTimeout,
    LLMUnavailable,
    StreamEvent,
    TextDelta,
    log_session,
)
from agents.llm.transport import NoCookies, Transport
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


def endpoint_where(base_url: str) -> str:
    """host:port of an endpoint, for messages and logs (never its path, query or userinfo)."""
    url = httpx.URL(base_url or "/")
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


class BreakerLog(pybreaker.CircuitBreakerListener):
    """Logs an endpoint breaker's transitions at WARNING and remembers the last failure,
    so a refused call can say what opened the breaker."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.last_failure = ""

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.last_failure = str(exc)

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        old = old_state.name if old_state is not None else "-"
        if old == new_state.name:
            return
        if new_state.name == pybreaker.STATE_OPEN:
            logger.warning(
                "LLM circuit breaker for %s opened (%s -> open) after %d failed calls; "
                "calls are refused for %g s: session=%s cause=%s",
                self.where,
                old,
                cb.fail_counter,
                cb.reset_timeout,
                log_session.get(),
                self.last_failure or "-",
            )
        else:
            logger.warning(
                "LLM circuit breaker for %s: %s -> %s (session=%s)",
                self.where,
                old,
                new_state.name,
                log_session.get(),
            )


def watch_breaker(breaker: pybreaker.CircuitBreaker, where: str) -> BreakerLog:
    """The breaker's BreakerLog, added on first use (tests pass bare breakers)."""
    for listener in breaker.listeners:
        if isinstance(listener, BreakerLog):
            return listener
    log = BreakerLog(where)
    breaker.add_listener(log)
    return log


def breaker_cause(breaker: pybreaker.CircuitBreaker) -> str:
    """The last failure the breaker counted ("" if none is known)."""
    for listener in breaker.listeners:
        if isinstance(listener, BreakerLog):
            return listener.last_failure
    return ""


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
        self.where = endpoint_where(base)
        self.model = model
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.max_retries = max(0, max_retries)
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self.breaker = breaker
        watch_breaker(breaker, self.where)
        self.max_tokens = max_tokens
        self._chat_url = f"{base}/v1/chat/completions"
        self._models_url = f"{base}/v1/models"
        self._auth_headers: dict[str, str] = {}
        if api_key:
            self._auth_headers["Authorization"] = f"Bearer {api_key}"
        if internal_auth:
            self._auth_headers["X-Internal-Auth"] = internal_auth
        self._http: httpx.AsyncClient | None = None
        self._transport: Transport | None = None
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
            self.abandon()
            if self._tls is None:  # loading the CA bundle takes tens of ms: once per client
                self._tls = httpx.create_ssl_context()
            self._transport = Transport(tls=self._tls, max_connections=MAX_CONNECTIONS)
            self._http = httpx.AsyncClient(
                transport=self._transport,
                cookies=NoCookies(),
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

    def abandon(self) -> None:
        """Drop the client of a loop that is gone (or going) without waiting for it."""
        if self._transport is not None:
            self._transport.abandon()
        self._http, self._http_loop, self._transport = None, None, None

    async def aclose(self) -> None:
        http, self._http, self._http_loop, self._transport = self._http, None, None, None
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
        started = time.monotonic()
        attempts = 0
        completion: Completion | None = None
        failure: LLMError | None = None  # the call's error that the breaker counts
        passthrough: BaseException | None = None  # re-raised after a neutral breaker exit
        try:
            # One breaker call per model call, settled once its retries are over: a failing
            # turn counts once, not once per attempt, so one session's bad luck cannot open
            # the breaker for everyone. A success is recorded only at the end of the stream,
            # or a server that always drops mid-stream would never trip it.
            with self.breaker.calling():
                try:
                    for attempt in itertools.count():
                        attempts = attempt + 1
                        yielded = False
                        try:
                            async with contextlib.aclosing(self._attempt(payload)) as events:
                                async for event in events:
                                    if isinstance(event, Completion):
                                        completion = event
                                    else:
                                        yielded = True
                                        yield event
                            break
                        except LLMError as exc:
                            if not await self._retrying(exc, attempt, yielded=yielded):
                                raise
                except LLMError as exc:
                    self._log_failure(exc, attempts=attempts, started=started)
                    if counts_against_breaker(exc):
                        failure = exc
                        raise
                    passthrough = exc
                except (asyncio.CancelledError, GeneratorExit) as exc:
                    # The client went away or stopped reading: that says nothing about the
                    # upstream's health, so it is not a failure. pybreaker has no neutral
                    # outcome, so leaving the block normally records a success.
                    passthrough = exc
        except pybreaker.CircuitBreakerError:
            if failure is None:  # refused on entry: fail fast, no network
                refused = LLMUnavailable(**self._refusal())
                self._log_failure(refused, attempts=0, started=started)
                raise refused from None
            raise failure from None  # this failure tripped it: report the real cause
        if passthrough is not None:
            raise passthrough
        assert completion is not None  # _attempt always ends with one or raises
        yield Done(completion)

    async def _retrying(self, exc: LLMError, attempt: int, *, yielded: bool) -> bool:
        """Wait before the next attempt; False when the call must fail with ``exc`` now."""
        tripped = self.breaker.current_state == pybreaker.STATE_OPEN  # by other calls
        # Never retry once text reached the caller: it cannot take it back.
        if yielded or tripped or not exc.retryable or attempt >= self.max_retries:
            return False
        delay = random.uniform(0, min(self.retry_max_delay, self.retry_base_delay * 2**attempt))
        if exc.retry_after is not None:
            delay = exc.retry_after
        logger.warning(
            "LLM attempt %d failed (session %s, endpoint %s): %s; retrying in %.2f s",
            attempt + 1,
            log_session.get(),
            self.where,
            exc,
            delay,
        )
        await asyncio.sleep(delay)
        # Other calls may have opened the breaker meanwhile: then it is not tried again.
        return self.breaker.current_state != pybreaker.STATE_OPEN

    def _log_failure(self, exc: LLMError, *, attempts: int, started: float) -> None:
        # Never the key or the prompt: the endpoint, the cause and what it cost.
        logger.warning(
            "LLM call failed: session=%s endpoint=%s model=%s status=%s code=%s attempts=%d "
            "duration=%.2fs cause=%s",
            log_session.get(),
            self.where,
            self.model,
            exc.status if exc.status is not None else "-",
            exc.code,
            attempts,
            time.monotonic() - started,
            exc,
        )

    def _refusal(self) -> dict[str, Any]:
        """What an open breaker says: what opened it and when it lets a call through again."""
        opened_at = getattr(getattr(self.breaker, "_state_storage", None), "opened_at", None)
        cause = breaker_cause(self.breaker)
        text = f"The model at {self.where} is not being called for now: its circuit breaker"
        retry_after: float | None = None
        if opened_at is not None:
            text += f" opened at {opened_at:%H:%M:%S} UTC"
            retry_after = max(0.0, opened_at.timestamp() + self.breaker.reset_timeout - time.time())
        text += f" after {self.breaker.fail_max} failed calls in a row"
        if cause:
            text += f" (the last: {cause.rstrip('.')})"
        if retry_after is not None:
            text += f"; it lets a call through again in {math.ceil(retry_after)} s."
        else:
            text += "."
        return {"message": text, "retry_after": retry_after}

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
                raise LLMStreamBroken(
                    f"{ENDED_EARLY_MESSAGE[:-1]}: {self.where} closed it before the reply was "
                    "complete."
                )
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
                raise self._broken() from exc
            except TimeoutError:
                raise self._no_first_byte() from None
        watch.start_read()
        try:
            return await anext(chunks, None)
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            watch.absorb()
            raise LLMTimeout(
                f"The model's stream from {self.where} stalled for more than "
                f"{self.idle_timeout:g} s (LLM_IDLE_TIMEOUT)."
            ) from None
        except httpx.HTTPError as exc:  # the connection dropped mid-body
            raise self._broken() from exc
        finally:
            watch.end_read()

    async def _send(
        self, client: httpx.AsyncClient, payload: dict[str, Any], deadline: float
    ) -> httpx.Response:
        """POST the request; return the 200 response with its body still unread."""
        request = client.build_request(
            "POST",
            self._chat_url,
            content=dumps_bytes(payload),  # orjson: a tenth of httpx's json= for the tools
            headers={
                "Accept": "text/event-stream, application/json",
                "Content-Type": "application/json",
                **self._auth_headers,
            },
        )
        try:
            async with asyncio.timeout_at(deadline):
                response = await client.send(request, stream=True)
        except TimeoutError:
            raise self._no_first_byte() from None
        except httpx.ConnectTimeout:
            raise LLMTimeout(
                f"Timed out connecting to the model at {self.where} after "
                f"{self.connect_timeout:g} s (LLM_CONNECT_TIMEOUT).",
                retryable=True,
                code="llm_connect_timeout",
            ) from None
        except httpx.ConnectError as exc:
            raise LLMError(
                f"Could not connect to the model at {self.where}: {_os_reason(exc)}.",
                retryable=True,
                code="llm_unreachable",
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # Nothing was answered yet (reset, or a stale keep-alive connection).
            raise LLMError(
                f"The connection to the model at {self.where} failed before it answered: "
                f"{_os_reason(exc)}.",
                retryable=True,
                code="llm_unreachable",
            ) from None
        except httpx.HTTPError as exc:
            raise LLMError(
                f"The request to the model at {self.where} failed ({type(exc).__name__})."
            ) from None
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
        raise status_error(response.status_code, body, response.headers, where=self.where)

    def _no_first_byte(self) -> LLMTimeout:
        return LLMTimeout(
            f"The model at {self.where} did not start answering within "
            f"{self.first_byte_timeout:g} s (LLM_FIRST_BYTE_TIMEOUT)."
        )

    def _broken(self) -> LLMStreamBroken:
        return LLMStreamBroken(
            f"{ENDED_EARLY_MESSAGE[:-1]}: the connection to {self.where} broke mid-answer."
        )

    async def check_health(self) -> dict[str, Any]:
        """A cheap GET /v1/models; never raises."""
        breaker = breaker_state_name(self.breaker)
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                response = await self._client().get(
                    self._models_url, headers=self._auth_headers, timeout=HEALTH_TIMEOUT_SECONDS
                )
        except httpx.ConnectError as exc:
            detail = f"cannot connect to the LLM at {self.where}: {_os_reason(exc)}"
            return {"status": "error", "detail": detail, "breaker": breaker}
        except Exception as exc:  # a health check reports, it does not raise
            detail = f"cannot reach the LLM at {self.where} ({type(exc).__name__})"
            return {"status": "error", "detail": detail, "breaker": breaker}
        if response.status_code != 200:
            detail = f"the LLM at {self.where} answered HTTP {response.status_code} to /v1/models"
            return {"status": "error", "detail": detail, "breaker": breaker}
        return {
            "status": "ok",
            "detail": f"reachable at {self.where}; model {self.model}",
            "breaker": breaker,
        }


def _os_reason(exc: BaseException) -> str:
    """The operating system's words for a failed connection ("connection refused")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return f"the host name does not resolve ({seen.strerror})"
        if isinstance(seen, OSError) and seen.errno:  # asyncio words it "Connect call failed"
            return os.strerror(seen.errno).lower()
        if isinstance(seen, OSError) and seen.strerror:
            return str(seen.strerror).lower()
        seen = seen.__cause__ or seen.__context__
    return str(exc).lower() or type(exc).__name__
