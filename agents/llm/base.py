"""The provider interface: what every model (remote or demo) yields, and its errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

UNAVAILABLE_MESSAGE = (
    "The LLM is temporarily unavailable (circuit breaker open); try again shortly."
)
ENDED_EARLY_MESSAGE = "The model's stream ended early."


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


class LLMContextOverflow(LLMError):
    """The provider refused the request as longer than the model's context (a 400).

    ``window`` and ``prompt_tokens`` are the figures the provider stated, when it did.
    """

    def __init__(
        self, message: str, *, window: int | None = None, prompt_tokens: int | None = None
    ) -> None:
        super().__init__(message, retryable=False, status=400)
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
