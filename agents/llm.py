"""The LLM hop: an OpenAI-compatible streaming client with timeouts, retries and a breaker.

``get_provider()`` returns the process-wide provider: an :class:`OpenAIClient` when
``LLM_BASE_URL`` is set, otherwise the built-in demo model named by ``LLM_DEMO_PROVIDER``.
Django settings are read lazily so this module imports without a configured project.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import json
import logging
import random
import re
import threading
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pybreaker

logger = logging.getLogger(__name__)

UNAVAILABLE_MESSAGE = (
    "The LLM is temporarily unavailable (circuit breaker open); try again shortly."
)
ENDED_EARLY_MESSAGE = "The model's stream ended early."
MAX_RETRY_AFTER_SECONDS = 30.0
HEALTH_TIMEOUT_SECONDS = 2.0
MAX_JSON_BODY_BYTES = 8 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
DRAIN_SECONDS = 0.1
# Streams are long-lived, so the pool must hold one connection per concurrent turn; httpx's
# default of 100 would queue turn 101 until the pool timeout.
MAX_CONNECTIONS = 1000


# --- Results and events ---------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the raw JSON text as the model produced it; the caller validates it


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Completion:
    text: str
    tool_calls: list[ToolCall]
    usage: Usage | None
    finish_reason: str | None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Done:
    completion: Completion


StreamEvent = TextDelta | Done


# --- Errors (messages are English and safe to show the user) -------------------------------------


class LLMError(Exception):
    retryable: bool = False
    status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        if status is not None:
            self.status = status
        self.retry_after = retry_after


class LLMUnavailable(LLMError):
    pass


class LLMTimeout(LLMError):
    pass


class LLMProtocolError(LLMError):
    pass


# --- The provider base class --------------------------------------------------------------------


class LLMProvider:
    """The one base class: OpenAIClient and the demo model implement ``stream_chat``."""

    label: str = "llm"

    async def stream_chat(
        self,
        *,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Yield TextDelta for each text fragment as soon as it arrives, then exactly one Done."""
        raise NotImplementedError
        yield  # unreachable: makes this an async generator, like the implementations

    async def complete(
        self,
        *,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        """Drain ``stream_chat`` and return the Done's completion."""
        done: Done | None = None
        async for event in self.stream_chat(
            messages=messages, tools=tools, tool_choice=tool_choice, response_format=response_format
        ):
            if isinstance(event, Done):
                done = event
        if done is None:
            raise LLMProtocolError(ENDED_EARLY_MESSAGE)
        return done.completion

    async def check_health(self) -> dict[str, Any]:
        return {"status": "ok", "detail": f"{self.label}: nothing to check", "breaker": "closed"}


# --- Server-sent events and chunk assembly ----------------------------------------------------

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass
class _SSEDecoder:
    """Incremental text/event-stream decoder (WHATWG rules) returning each event's data.

    Works on bytes and splits only on CR, LF and CRLF: httpx's ``aiter_lines`` uses
    ``str.splitlines`` and would also break JSON strings containing U+2028 and friends.
    """

    _tail: bytes = b""
    _skip_lf: bool = False  # the previous read ended in CR; a leading LF completes that CRLF
    _started: bool = False
    _data: list[str] = field(default_factory=list)

    def feed(self, chunk: bytes) -> list[str]:
        if not chunk:
            return []
        if not self._started:
            self._started = True
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
        if self._skip_lf:
            self._skip_lf = False
            chunk = chunk.removeprefix(b"\n")
        buf = self._tail + chunk
        lines = _LINE_END.split(buf)
        self._tail = lines.pop()
        self._skip_lf = buf.endswith(b"\r")
        events: list[str] = []
        for line in lines:
            if not line:  # a blank line dispatches the event
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            if line[0] == 0x3A:  # ":" starts a comment (keep-alives)
                continue
            name, _, value = line.partition(b":")
            if name != b"data":  # event:, id:, retry: and unknown fields do not matter here
                continue
            self._data.append(value.removeprefix(b" ").decode("utf-8", errors="replace"))
        return events

    def pending(self) -> str | None:
        """The data of an event left unterminated at the end of the stream."""
        if self._tail:
            self.feed(b"\n")
        return "\n".join(self._data) if self._data else None


class _IdleWatch:
    """The idle timeout of one stream: one timer, not a timeout context per chunk.

    A stream of 2,000 deltas would otherwise enter and leave 2,000 timeout contexts. The timer
    cancels the reading task only while a read is pending and has waited ``limit`` seconds; time
    the caller spends between reads never counts.
    """

    def __init__(self, limit: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.task: asyncio.Task[Any] | None = None
        self.reading_since: float | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.fired = False

    def start_read(self) -> None:
        self.task = asyncio.current_task()
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


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _StreamState:
    """What the chunks of one streamed reply have said so far."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _PartialCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None
    done: bool = False
    events: int = 0

    def add_event(self, data: str) -> str:
        """Apply one SSE event; return its text fragment ("" if none)."""
        self.events += 1
        if data.strip() == "[DONE]":
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
        except ValueError:
            raise LLMProtocolError("The LLM sent a malformed stream (not JSON).") from None
        if not isinstance(chunk, dict):
            raise LLMProtocolError("The LLM sent a malformed stream chunk.")
        if chunk.get("error") and not chunk.get("choices"):
            raise LLMError(f"The LLM reported an error mid-stream: {_error_text(chunk)}")
        if isinstance(chunk.get("usage"), dict):
            self.usage = _usage(chunk["usage"])
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise LLMProtocolError("The LLM sent a malformed stream chunk.")
        fragments: list[str] = []
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # only the first choice is ever requested
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise LLMProtocolError("The LLM sent a malformed stream chunk.")
            content = delta.get("content")
            if isinstance(content, str) and content:
                fragments.append(content)
            for fragment in delta.get("tool_calls") or []:
                self._add_tool_fragment(fragment)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        text = "".join(fragments)
        if text:
            self.text.append(text)
        return text

    def _add_tool_fragment(self, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            raise LLMProtocolError("The LLM sent a malformed tool call.")
        index = fragment.get("index")
        if not isinstance(index, int):
            # Some servers omit the index and send each call whole: a new id means a new call.
            known = {c.id: i for i, c in self.calls.items()}
            new_id = fragment.get("id")
            if new_id:
                index = known.get(new_id, len(self.calls))
            else:
                index = max(self.calls, default=0)
        call = self.calls.setdefault(index, _PartialCall())
        if fragment.get("id") and not call.id:
            call.id = str(fragment["id"])
        function = fragment.get("function") or {}
        if not isinstance(function, dict):
            raise LLMProtocolError("The LLM sent a malformed tool call.")
        name = function.get("name")
        # Some servers (llama.cpp) repeat the name in every fragment: keep the first one only.
        if isinstance(name, str) and name and not call.name:
            call.name = name
        call.arguments.append(_arguments_text(function.get("arguments")))

    def completion(self) -> Completion:
        calls = [
            ToolCall(id=c.id or _new_call_id(), name=c.name, arguments="".join(c.arguments))
            for _, c in sorted(self.calls.items())
        ]
        return Completion(
            text="".join(self.text),
            tool_calls=calls,
            usage=self.usage,
            finish_reason=self.finish_reason,
        )


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _arguments_text(arguments: Any) -> str:
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments)  # a provider that sends an object instead of JSON text


def _usage(raw: dict[str, Any]) -> Usage:
    try:
        return Usage(
            prompt_tokens=int(raw.get("prompt_tokens") or 0),
            completion_tokens=int(raw.get("completion_tokens") or 0),
        )
    except (TypeError, ValueError):
        raise LLMProtocolError("The LLM sent malformed usage figures.") from None


def _error_text(body: Any) -> str:
    """The upstream's own error message, shortened, or "" when the body has none."""
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        else:
            message = body.get("message") or body.get("detail")
    if not isinstance(message, str):
        return ""
    text = " ".join(message.split())
    return text if len(text) <= 200 else text[:199] + "…"


def _parse_json_reply(raw: bytes) -> Completion:
    """A non-streaming ``chat.completion`` body."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise LLMProtocolError("The LLM sent a malformed reply (not JSON).") from None
    if not isinstance(body, dict):
        raise LLMProtocolError("The LLM sent a malformed reply.")
    if body.get("error") and not body.get("choices"):
        raise LLMError(f"The LLM reported an error: {_error_text(body)}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LLMProtocolError("The LLM sent a reply without choices.")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise LLMProtocolError("The LLM sent a reply without a message.")
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = []
    for raw_call in message.get("tool_calls") or []:
        if not isinstance(raw_call, dict) or not isinstance(raw_call.get("function"), dict):
            raise LLMProtocolError("The LLM sent a malformed tool call.")
        function = raw_call["function"]
        calls.append(
            ToolCall(
                id=str(raw_call.get("id") or _new_call_id()),
                name=str(function.get("name") or ""),
                arguments=_arguments_text(function.get("arguments")),
            )
        )
    usage = body.get("usage")
    finish_reason = choices[0].get("finish_reason")
    return Completion(
        text=content if isinstance(content, str) else "",
        tool_calls=calls,
        usage=_usage(usage) if isinstance(usage, dict) else None,
        finish_reason=str(finish_reason) if finish_reason else None,
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _status_error(status: int, body: bytes, headers: httpx.Headers) -> LLMError:
    try:
        detail = _error_text(json.loads(body))
    except ValueError:
        detail = ""
    message = f"The LLM returned HTTP {status}" + (f": {detail}" if detail else ".")
    return LLMError(
        message,
        status=status,
        retryable=status == 429 or status >= 500,
        retry_after=_retry_after(headers),
    )


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the end of the body after [DONE] so the connection goes back to the pool.

    httpx closes a connection whose response was not read to the end; the chunked terminator
    normally follows [DONE] at once, and a server that dawdles just loses its connection.
    """
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in chunks:
                pass


def _counts_against_breaker(exc: LLMError) -> bool:
    # A 4xx other than 429 is our request's fault (or a bad key), not an unhealthy upstream;
    # opening the breaker would hide the real message behind "temporarily unavailable".
    return exc.status is None or exc.status == 429 or exc.status >= 500


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
        self._http_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def __repr__(self) -> str:  # never show the keys
        return f"<OpenAIClient {self.base_url} model={self.model}>"

    def _client(self) -> httpx.AsyncClient:
        """The connection pool, one per event loop.

        Pooled connections belong to the loop that opened them; under daphne there is one loop,
        but tests and ``async_to_sync`` callers run several over the life of the process.
        """
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is None or self._http_loop() is not loop:
            self._http = httpx.AsyncClient(
                # Reads are bounded by the first-byte and idle deadlines below, not by httpx.
                timeout=httpx.Timeout(
                    connect=self.connect_timeout,
                    read=None,
                    write=self.connect_timeout,
                    pool=self.connect_timeout,
                ),
                limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=100),
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
                        if _counts_against_breaker(exc):
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
        response = await self._send(payload, deadline)
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
                completion = _parse_json_reply(bytes(body))
                if completion.text:
                    yield TextDelta(completion.text)
                yield completion
                return

            decoder, state = _SSEDecoder(), _StreamState()
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
                await _drain(chunks)
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

    async def _send(self, payload: dict[str, Any], deadline: float) -> httpx.Response:
        """POST the request; return the 200 response with its body still unread."""
        client = self._client()
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
        raise _status_error(response.status_code, body, response.headers)

    async def check_health(self) -> dict[str, Any]:
        """A cheap GET /v1/models; never raises."""
        breaker = _state_name(self.breaker)
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


# --- Process-wide provider and breaker ------------------------------------------------------------

_lock = threading.RLock()
_breaker: pybreaker.CircuitBreaker | None = None
_provider: LLMProvider | None = None


def get_breaker() -> pybreaker.CircuitBreaker:
    global _breaker
    with _lock:
        if _breaker is None:
            from django.conf import settings

            _breaker = pybreaker.CircuitBreaker(
                fail_max=settings.LLM_BREAKER_FAIL_MAX,
                reset_timeout=settings.LLM_BREAKER_RESET_SECONDS,
                name="llm",
            )
        return _breaker


def _state_name(breaker: pybreaker.CircuitBreaker) -> str:
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


def breaker_state() -> str:
    return _state_name(get_breaker())


def get_provider() -> LLMProvider:
    global _provider
    with _lock:
        if _provider is None:
            from django.conf import settings
            from django.utils.module_loading import import_string

            if not settings.LLM_BASE_URL:
                path = getattr(settings, "LLM_DEMO_PROVIDER", "agents.demo.DemoModel")
                _provider = import_string(path)()
            else:
                _provider = OpenAIClient(
                    base_url=settings.LLM_BASE_URL,
                    api_key=settings.LLM_API_KEY,
                    model=settings.LLM_MODEL,
                    internal_auth=(
                        settings.INTERNAL_API_KEY if settings.LLM_SEND_INTERNAL_AUTH else ""
                    ),
                    connect_timeout=settings.LLM_CONNECT_TIMEOUT,
                    first_byte_timeout=settings.LLM_FIRST_BYTE_TIMEOUT,
                    idle_timeout=settings.LLM_IDLE_TIMEOUT,
                    max_retries=settings.LLM_MAX_RETRIES,
                    retry_base_delay=settings.LLM_RETRY_BASE_DELAY,
                    retry_max_delay=settings.LLM_RETRY_MAX_DELAY,
                    breaker=get_breaker(),
                    max_tokens=settings.LLM_MAX_TOKENS,
                )
        assert _provider is not None
        return _provider


def reset_provider() -> None:
    """Forget the cached provider and breaker (tests call this after changing settings).

    The old client's pool is left to the garbage collector: it may belong to another event
    loop, so it cannot be closed from here.
    """
    global _provider, _breaker
    with _lock:
        _provider = None
        _breaker = None
