"""The OpenAI wire format: server-sent events, streamed deltas and JSON replies."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from agents.llm.base import (
    Completion,
    LLMContextOverflow,
    LLMError,
    LLMProtocolError,
    ToolCall,
    Usage,
)

logger = logging.getLogger(__name__)
MAX_RETRY_AFTER_SECONDS = 30.0
MAX_JSON_BODY_BYTES = 8 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
DRAIN_SECONDS = 0.1
# Streams are long-lived, so the pool must hold one connection per concurrent turn; httpx's
# default of 100 would queue turn 101 until the pool timeout.
MAX_CONNECTIONS = 1000

# --- Server-sent events and chunk assembly ----------------------------------------------------

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass
class SSEDecoder:
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
        buf = self._tail + chunk if self._tail else chunk
        if b"\r" in buf:
            lines = _LINE_END.split(buf)
            self._skip_lf = buf.endswith(b"\r")
        else:  # what nearly every server sends: LF only, and bytes.split is 5x a regex split
            lines = buf.split(b"\n")
        self._tail = lines.pop()
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


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class StreamState:
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
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            try:  # orjson refuses lone surrogates (\\ud800), which json takes
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


def parse_json_reply(raw: bytes) -> Completion:
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


# How servers say a request is longer than the model's context: OpenAI's
# code context_length_exceeded, vLLM's "maximum context length is N tokens", llama.cpp's
# "the request exceeds the available context size" (type exceed_context_size_error), and the
# plain "too long" of others. Only 400 and 413 replies are read this way.
_OVERFLOW = re.compile(
    r"context_length_exceeded|exceed_context_size|maximum context length|context (?:size|window)"
    r"|too long|too many tokens",
    re.IGNORECASE,
)
_WINDOW = (
    re.compile(r"maximum context length is (\d+)", re.IGNORECASE),
    re.compile(r"\"n_ctx\"\s*:\s*(\d+)"),
)
# The prompt's size: vLLM's "(N in the messages, M in the completion)" before its "requested"
# figure, which counts the completion too.
_PROMPT = (
    re.compile(r"(\d+) in the messages", re.IGNORECASE),
    re.compile(r"resulted in (\d+) tokens", re.IGNORECASE),
    re.compile(r"\"n_prompt_tokens\"\s*:\s*(\d+)"),
)


def _first_number(patterns: tuple[re.Pattern[str], ...], text: str) -> int | None:
    for pattern in patterns:
        match = pattern.search(text)
        if match is not None:
            return int(match.group(1))
    return None


def overflow_error(status: int, body: bytes, detail: str) -> LLMContextOverflow | None:
    """The "context too long" refusal in a 400/413 reply, with the figures it states."""
    if status not in (400, 413):
        return None
    raw = body.decode("utf-8", errors="replace")
    if not _OVERFLOW.search(raw):
        return None
    text = detail or " ".join(raw.split())[:200]
    return LLMContextOverflow(
        f"The LLM returned HTTP {status}: the request is longer than the model's context"
        + (f" ({text})" if text else "."),
        window=_first_number(_WINDOW, raw),
        prompt_tokens=_first_number(_PROMPT, raw),
    )


def status_error(status: int, body: bytes, headers: httpx.Headers, *, where: str) -> LLMError:
    """An HTTP error reply, named by its status and the provider's own message."""
    try:
        detail = _error_text(json.loads(body))
    except ValueError:
        detail = ""
    overflow = overflow_error(status, body, detail)
    if overflow is not None:
        return overflow
    if not detail:  # a plain-text error page says more than nothing
        detail = " ".join(body[:200].decode("utf-8", errors="replace").split())
    message = f"The model at {where} answered HTTP {status}" + (f": {detail}" if detail else ".")
    if status == 429:
        code = "llm_rate_limited"
    elif status >= 500:
        code = "llm_server_error"
    else:
        code = "llm_request_rejected"
    return LLMError(
        message,
        status=status,
        retryable=status == 429 or status >= 500,
        retry_after=_retry_after(headers),
        code=code,
    )


async def drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the end of the body after [DONE] so the connection goes back to the pool.

    httpx closes a connection whose response was not read to the end; the chunked terminator
    normally follows [DONE] at once, and a server that dawdles just loses its connection.
    """
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in chunks:
                pass


def counts_against_breaker(exc: LLMError) -> bool:
    """Whether a failed call (after its retries) says the endpoint is unwell.

    Connect errors, timeouts, broken or garbled streams, 5xx and 429 do. A 4xx other than 429
    is our request's fault (too long, a bad key), not an unhealthy upstream: opening the
    breaker would hide the real message behind "temporarily unavailable" from every session.
    """
    return exc.status is None or exc.status == 429 or exc.status >= 500
