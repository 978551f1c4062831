"""The LLM hop: an OpenAI-compatible streaming client with timeouts, retries and a breaker.

``get_provider()`` returns the process-wide provider: an :class:`OpenAIClient` when
``LLM_BASE_URL`` is set, otherwise the built-in demo model named by ``LLM_DEMO_PROVIDER``.
Django settings are read lazily so this module imports without a configured project.
"""

from __future__ import annotations

import threading

import pybreaker

from agents.llm.base import (
    ENDED_EARLY_MESSAGE,
    Completion,
    Done,
    LLMContextOverflow,
    LLMError,
    LLMProtocolError,
    LLMProvider,
    LLMStreamBroken,
    LLMTimeout,
    LLMUnavailable,
    StreamEvent,
    TextDelta,
    ToolCall,
    Usage,
    log_session,
)
from agents.llm.client import OpenAIClient, breaker_state_name, endpoint_where

__all__ = [
    "ENDED_EARLY_MESSAGE",
    "Completion",
    "Done",
    "LLMContextOverflow",
    "LLMError",
    "LLMProtocolError",
    "LLMProvider",
    "LLMStreamBroken",
    "LLMTimeout",
    "LLMUnavailable",
    "OpenAIClient",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "Usage",
    "breaker_state",
    "breaker_state_name",
    "breaker_states",
    "get_breaker",
    "get_provider",
    "log_session",
    "reset_provider",
]


# --- Process-wide provider and breaker ------------------------------------------------------------

_lock = threading.RLock()
# One breaker per endpoint (base URL): an endpoint that is down must not stop calls to
# another one (a routing model on its own server, say).
_breakers: dict[str, pybreaker.CircuitBreaker] = {}
_provider: LLMProvider | None = None


def get_breaker(endpoint: str | None = None) -> pybreaker.CircuitBreaker:
    """The breaker of ``endpoint`` (a base URL; default: LLM_BASE_URL), made on first use."""
    from django.conf import settings

    key = (endpoint if endpoint is not None else settings.LLM_BASE_URL) or "demo"
    with _lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = pybreaker.CircuitBreaker(
                fail_max=settings.LLM_BREAKER_FAIL_MAX,
                reset_timeout=settings.LLM_BREAKER_RESET_SECONDS,
                name=key if key == "demo" else endpoint_where(key),
            )
        return breaker


def breaker_states() -> dict[str, str]:
    """Each endpoint's breaker state, by host:port (the main endpoint's even before use)."""
    get_breaker()
    with _lock:
        breakers = list(_breakers.values())
    return {str(b.name): breaker_state_name(b) for b in breakers}


def breaker_state() -> str:
    """The worst of the endpoints' states: "open" while any breaker is open."""
    states = set(breaker_states().values())
    for state in (pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN):
        if state in states:
            return state
    return pybreaker.STATE_CLOSED


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
                    breaker=get_breaker(settings.LLM_BASE_URL),
                    max_tokens=settings.LLM_MAX_TOKENS,
                )
        assert _provider is not None
        return _provider


def reset_provider() -> None:
    """Forget the cached provider and breaker (tests call this after changing settings).

    The old client's connections are closed without waiting: they may belong to another
    event loop, which cannot be awaited from here.
    """
    global _provider
    with _lock:
        old, _provider = _provider, None
        if isinstance(old, OpenAIClient):
            old.abandon()
        _breakers.clear()
