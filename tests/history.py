"""Checks on what the runtime streams and stores, shared by in-process and end-to-end tests."""

from __future__ import annotations

import json
from typing import Any


def text_of(chunks: list[dict[str, Any]]) -> str:
    """The reply a client gets by concatenating the assistant tokens."""
    return "".join(c["token"] for c in chunks if c["type"] == "assistant_message")


def assert_strict(messages: list[dict[str, Any]]) -> None:
    """What an OpenAI-strict provider demands: every assistant call answered, right after it."""
    open_calls: list[str] = []
    for message in messages:
        assert message["content"] is not None, message
        if message["role"] == "tool":
            assert message["tool_call_id"] in open_calls, messages
            open_calls.remove(message["tool_call_id"])
            continue
        assert not open_calls, f"unanswered calls {open_calls} before {message}"
        for call in message.get("tool_calls") or []:
            assert call["type"] == "function"
            assert isinstance(json.loads(call["function"]["arguments"]), dict)
            open_calls.append(call["id"])
    assert not open_calls, messages
