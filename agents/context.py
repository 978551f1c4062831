"""What of a long session the model is sent: the history, fitted to a size budget.

The stored history is never changed; only the copy sent to the model is trimmed. Sizes are
counted in characters (about four per token), which needs no tokenizer and errs on the safe
side for code.
"""

from __future__ import annotations

from typing import Any

OMITTED_NOTE = (
    "{count} earlier message(s) of this conversation were left out to fit the model's "
    "context. Ask the user if you need something from them."
)


def _size(message: dict[str, Any]) -> int:
    size = len(message.get("content") or "")
    for call in message.get("tool_calls") or []:
        size += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return size + 16  # role and framing


def shorten_tool_output(message: dict[str, Any], limit: int) -> dict[str, Any]:
    """A tool result over ``limit`` characters keeps its head and tail, with a marker between."""
    content = message.get("content") or ""
    if message.get("role") != "tool" or len(content) <= limit:
        return message
    half = limit // 2
    cut = len(content) - 2 * half
    marker = f"\n[... {cut} characters of tool output left out ...]\n"
    return {**message, "content": content[:half] + marker + content[-half:]}


def fit_history(
    history: list[dict[str, Any]], *, budget: int, tool_output_limit: int
) -> list[dict[str, Any]]:
    """The most recent part of ``history`` that fits in ``budget`` characters.

    Cuts only in front of a user message, so an assistant tool call never loses its result
    (strict providers reject that). The latest exchange is always kept, even over budget.
    A system note says how much was left out.
    """
    messages = [shorten_tool_output(m, tool_output_limit) for m in history]
    total = sum(_size(m) for m in messages)
    if total <= budget:
        return messages
    starts = [i for i, m in enumerate(messages) if m["role"] == "user" and i > 0]
    keep_from = 0
    for start in starts:
        keep_from = start
        total -= sum(_size(m) for m in messages[_previous(starts, start) : start])
        if total <= budget:
            break
    if keep_from == 0:
        return messages
    note = {"role": "system", "content": OMITTED_NOTE.format(count=keep_from)}
    return [note, *messages[keep_from:]]


def _previous(starts: list[int], start: int) -> int:
    index = starts.index(start)
    return starts[index - 1] if index > 0 else 0
