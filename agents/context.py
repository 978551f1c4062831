"""What of a long session the model is sent: the history, fitted to a budget in tokens.

The stored history is never changed; only the copy sent to the model is trimmed. The budget is
the model's window less a reserve for the answer, the system prompt and the tool definitions
(agents.tokens estimates each, scaled by what the provider reported before). What goes first:

1. whole exchanges (a user message and everything up to the next one), oldest first, so the
   request still starts with a user message (strict chat templates demand it);
2. then, inside the latest exchange, its oldest tool rounds (an assistant message with its tool
   calls and all of their results), never one half of a pair;
3. last, long contents of what is left are cut in the middle, keeping head and tail.

The latest user message is always sent. A note in the system prompt says what was left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents import tokens

OMITTED_NOTE = (
    "{count} earlier message(s) of this conversation were left out to fit the model's "
    "context. Ask the user if you need something from them."
)
SUMMARY_NOTE = (
    "{count} earlier message(s) of this conversation were left out to fit the model's "
    "context. A summary of the earliest of them:\n{summary}"
)
SHORTENED_NOTE = "\n[... {cut} characters left out to fit the model's context ...]\n"
TOOL_OUTPUT_NOTE = "\n[... {cut} characters of tool output left out ...]\n"
CHARS_PER_TOKEN = 4  # only to turn a token budget into a character cut; errs on the safe side
MIN_KEPT_CHARS = 200  # a message cut to fit keeps at least this much of its head and tail

Count = Callable[[dict[str, Any]], int]


def _cut_middle(content: str, limit: int, note: str) -> str:
    half = max(0, limit) // 2
    cut = len(content) - 2 * half
    if cut <= 0:
        return content
    return content[:half] + note.format(cut=cut) + content[len(content) - half :]


def shorten_tool_output(message: dict[str, Any], limit: int) -> dict[str, Any]:
    """A tool result over ``limit`` characters keeps its head and tail, with a marker between."""
    content = message.get("content") or ""
    if message.get("role") != "tool" or len(content) <= limit:
        return message
    return {**message, "content": _cut_middle(content, limit, TOOL_OUTPUT_NOTE)}


def transcript_of(messages: list[dict[str, Any]], *, chars: int) -> str:
    """Messages as plain text for a summary request, cut in the middle to ``chars``."""
    lines = []
    for message in messages:
        text = message.get("content") or ""
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            text += f"\n[calls {function.get('name')} {function.get('arguments')}]"
        lines.append(f"{message['role']}: {text}")
    return _cut_middle("\n\n".join(lines), chars, SHORTENED_NOTE)


def _units(messages: list[dict[str, Any]]) -> list[list[int]]:
    """Indexes grouped so that no group splits a tool call from its result: an assistant
    message takes the tool messages after it; every other message stands alone."""
    units: list[list[int]] = []
    for i, message in enumerate(messages):
        if message["role"] == "tool" and units:
            units[-1].append(i)
        else:
            units.append([i])
    return units


def fit_history(
    history: list[dict[str, Any]],
    *,
    budget: int,
    tool_output_limit: int,
    count: Count = tokens.estimate_message,
) -> list[dict[str, Any]]:
    """The most recent part of ``history`` that fits in ``budget`` tokens (as ``count`` says).

    A system message in front (only when something was left out) says how much.
    """
    fitted, omitted, _ = _fit(history, budget, tool_output_limit, count)
    if omitted == 0:
        return fitted
    return [{"role": "system", "content": OMITTED_NOTE.format(count=omitted)}, *fitted]


def _fit(
    history: list[dict[str, Any]], budget: int, tool_output_limit: int, count: Count
) -> tuple[list[dict[str, Any]], int, int]:
    """What fits, how many messages were left out, and how many of them lead the history."""
    messages = [shorten_tool_output(m, tool_output_limit) for m in history]
    sizes = [count(m) for m in messages]
    total = sum(sizes)
    if total <= budget or not messages:
        return messages, 0, 0
    units = _units(messages)
    last_user = max(
        (u for u, unit in enumerate(units) if messages[unit[0]]["role"] == "user"),
        default=len(units) - 1,
    )
    keep = [True] * len(units)

    def drop(u: int) -> None:
        nonlocal total
        keep[u] = False
        total -= sum(sizes[i] for i in units[u])

    # 1. Whole exchanges, oldest first: cut only in front of a user message.
    starts = [u for u in range(1, last_user + 1) if messages[units[u][0]]["role"] == "user"]
    for start in starts:
        if total <= budget:
            break
        for u in range(start):
            if keep[u]:
                drop(u)
    # 2. The latest exchange's oldest tool rounds (its user message and last unit stay).
    for u in range(last_user + 1, len(units) - 1):
        if total <= budget:
            break
        if messages[units[u][0]].get("tool_calls") or len(units[u]) > 1:
            drop(u)
    kept = [i for u, unit in enumerate(units) if keep[u] for i in unit]
    fitted = [messages[i] for i in kept]
    # 3. Still over: cut the longest contents in the middle until it fits.
    if total > budget:
        fitted = _shorten(fitted, over=total - budget, count=count)
    return fitted, len(messages) - len(kept), kept[0] if kept else len(messages)


def _shorten(messages: list[dict[str, Any]], *, over: int, count: Count) -> list[dict[str, Any]]:
    out = list(messages)
    order = sorted(range(len(out)), key=lambda i: -len(out[i].get("content") or ""))
    for i in order:
        if over <= 0:
            break
        content = out[i].get("content") or ""
        before = count(out[i])
        marker = len(SHORTENED_NOTE) + 8  # the marker itself takes room too
        keep_chars = max(MIN_KEPT_CHARS, len(content) - over * CHARS_PER_TOKEN - marker)
        if keep_chars >= len(content):
            continue
        out[i] = {**out[i], "content": _cut_middle(content, keep_chars, SHORTENED_NOTE)}
        over -= before - count(out[i])
    return out


# --- The whole request --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fitted:
    """A request ready to send, and what it was fitted to (all in estimated tokens)."""

    messages: list[dict[str, Any]]
    estimate: int  # raw estimate of the prompt (messages and tools), before calibration
    tokens: int  # the same, calibrated for the model: what the budget is compared with
    budget: int  # window less the reserve for the answer
    history_tokens: int  # calibrated tokens of the history part
    omitted: int  # messages of the history left out
    leading: int  # how many of those are the history's first messages (what a summary covers)


def fit_request(
    *,
    prompt: str,
    history: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    model: str,
    window: int,
    reserve: int,
    tool_output_chars: int,
    history_budget: int | None = None,
    summary_tokens: int = 0,
) -> Fitted:
    """The system prompt and as much recent history as fits ``window - reserve`` tokens.

    ``history_budget`` caps the history further (a retry after the provider said the request
    was too long); ``summary_tokens`` keeps room for a summary of what is left out.
    """
    scale = tokens.factor(model)

    def count(message: dict[str, Any]) -> int:
        return round(tokens.estimate_message(message) * scale)

    budget = max(0, window - reserve)
    fixed = round(
        (
            tokens.REQUEST_OVERHEAD
            + tokens.estimate_message({"role": "system", "content": prompt})
            + tokens.estimate_tools(tools)
            # The note on what was left out may join the prompt: count it in advance.
            + tokens.estimate_text(OMITTED_NOTE)
            + summary_tokens
        )
        * scale
    )
    room = max(0, budget - fixed)
    if history_budget is not None:
        room = min(room, history_budget)
    # No single tool output may take more than half of the room.
    limit = min(tool_output_chars, max(MIN_KEPT_CHARS, room * CHARS_PER_TOKEN // 2))
    fitted, omitted, leading = _fit(history, room, limit, count)
    note = OMITTED_NOTE.format(count=omitted) if omitted else ""
    return _assemble(prompt, note, fitted, tools, model, budget, omitted, leading)


def with_summary(
    fitted: Fitted, *, prompt: str, summary: str, tools: list[dict[str, Any]] | None, model: str
) -> Fitted:
    """The same request with the summary of what was left out in place of the bare note."""
    note = SUMMARY_NOTE.format(count=fitted.omitted, summary=summary)
    history = fitted.messages[1:]
    return _assemble(
        prompt, note, history, tools, model, fitted.budget, fitted.omitted, fitted.leading
    )


def _assemble(
    prompt: str,
    note: str,
    history: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    model: str,
    budget: int,
    omitted: int,
    leading: int,
) -> Fitted:
    scale = tokens.factor(model)
    # The note joins the one system message: some servers refuse a second one.
    system = f"{prompt}\n\n{note}" if note else prompt
    messages = [{"role": "system", "content": system}, *history]
    estimate = tokens.estimate_request(messages, tools)
    return Fitted(
        messages=messages,
        estimate=estimate,
        tokens=round(estimate * scale),
        budget=budget,
        history_tokens=round(sum(tokens.estimate_message(m) for m in history) * scale),
        omitted=omitted,
        leading=leading,
    )
