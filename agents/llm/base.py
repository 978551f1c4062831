"""The provider interface: what every model (remote or demo) yields, and its errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

ENDED_EARLY_MESSAGE = "The model's stream ended early."

# The session a model call is made for, so the client's log lines can name it (set by the
# turn; the client has no other way to know).
log_session: ContextVar[str] = ContextVar("llm_log_session", default="-")


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
    estimated: bool = False  # counted by the runtime (agents.tokens): the provider sent none


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
    status: int | None = None  # the upstream's HTTP status, when it answered with one
    code: str = "llm_error"  # a machine word for the error chunk's metadata

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def chunk_metadata(self) -> dict[str, Any]:
        """The error chunk's metadata (PROTOCOL §3): the HTTP status the failure stands for,
        a machine word, and the upstream's own status and retry delay when there are any."""
        if self.status == 429:
            status = 429
        elif isinstance(self, LLMTimeout):
            status = 504
        elif isinstance(self, LLMUnavailable):
            status = 503
        else:
            status = 502
        metadata: dict[str, Any] = {"status": status, "code": self.code}
        if self.status is not None:
            metadata["upstream_status"] = self.status
        if self.retry_after is not None:
            metadata["retry_after"] = max(1, round(self.retry_after))
        return metadata


class LLMUnavailable(LLMError):
    """Refused without a request: the endpoint's circuit breaker is open."""

    code = "llm_breaker_open"


class LLMTimeout(LLMError):
    code = "llm_timeout"


class LLMProtocolError(LLMError):
    code = "llm_bad_reply"


class LLMStreamBroken(LLMProtocolError):
    """The connection closed, or the stream ended, before the reply was complete."""

    code = "llm_stream_broken"


class LLMContextOverflow(LLMError):
    """The provider refused the request as longer than the model's context (a 400).

    ``window`` and ``prompt_tokens`` are the figures the provider stated, when it did.
    """

    def __init__(
        self, message: str, *, window: int | None = None, prompt_tokens: int | None = None
    ) -> None:
        super().__init__(message, retryable=False, status=400, code="llm_context_too_long")
        self.window = window
        self.prompt_tokens = prompt_tokens


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
