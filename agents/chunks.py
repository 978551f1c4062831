"""The chunks of PROTOCOL §3.2 and their SSE framing: one place, so SSE and WebSocket agree."""

from __future__ import annotations

import json
from typing import Any

import orjson

from agent_runtime.errors import ApplicationError

# [compat] Every chunk carries every key, in this order.
CHUNK_KEYS = (
    "type",
    "content",
    "token",
    "is_final",
    "call_id",
    "tool_name",
    "arguments",
    "requires_approval",
    "error",
    "metadata",
)
_BLANK: dict[str, Any] = dict.fromkeys(CHUNK_KEYS)
_BLANK["is_final"] = False
_BLANK["requires_approval"] = False


def chunk(type: str, **fields: Any) -> dict[str, Any]:
    data = dict(_BLANK)
    data["type"] = type
    for key, value in fields.items():
        if key not in _BLANK:
            raise KeyError(f"unknown chunk field {key!r}")
        data[key] = value
    return data


_TOKEN = dict(_BLANK, type="assistant_message")


def token_chunk(
    text: str, *, is_final: bool = False, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    # The most frequent chunk by far: one C-level copy, not chunk()'s checks.
    return dict(_TOKEN, content=text, token=text, is_final=is_final, metadata=metadata)


def tool_call_chunk(
    *, call_id: str, tool_name: str, arguments: dict[str, Any], requires_approval: bool
) -> dict[str, Any]:
    return chunk(
        "tool_call",
        call_id=call_id,
        tool_name=tool_name,
        arguments=arguments,
        requires_approval=requires_approval,
        is_final=True,
    )


# [compat] An agent switch's confidence is a level: the IDE's parser types it String? and
# fails on a number. The router's numeric score travels beside it as ``score``.
HIGH, MEDIUM, LOW = "high", "medium", "low"
CONFIDENCE_LEVELS = (HIGH, MEDIUM, LOW)
# What an explicit switch (the user's own choice) says, as the original did.
USER_REQUESTED = "User requested"


def confidence_level(score: float | None) -> str | None:
    """The level of a router score in [0, 1]: 0.8 and up is high, 0.5 and up medium."""
    if score is None:
        return None
    if score >= 0.8:
        return HIGH
    if score >= 0.5:
        return MEDIUM
    return LOW


def switched_chunk(
    *,
    from_agent: str,
    to_agent: str,
    reason: str,
    confidence: str | None,
    score: float | None = None,
    is_final: bool,
) -> dict[str, Any]:
    return chunk(
        "agent_switched",
        content=f"Switched to {to_agent} agent",
        is_final=is_final,
        metadata={
            "from_agent": from_agent,
            "to_agent": to_agent,
            "reason": reason,
            "confidence": confidence,
            "score": score,
        },
    )


def error_chunk(text: str, **metadata: Any) -> dict[str, Any]:
    return chunk("error", content=text, error=text, is_final=True, metadata=metadata or None)


def refusal_chunk(exc: ApplicationError) -> dict[str, Any]:
    """A refusal as an ``error`` chunk whose metadata carries the HTTP status it stands for,
    its machine word and any ``retry_after`` (PROTOCOL §3): the same over SSE and WebSocket."""
    metadata: dict[str, Any] = {"status": exc.status, "code": exc.code}
    if "Retry-After" in exc.headers:
        metadata["retry_after"] = int(exc.headers["Retry-After"])
    return error_chunk(exc.detail, **metadata)


def dumps_bytes(data: Any) -> bytes:
    """Compact JSON, through orjson where it can (it refuses lone surrogates, and integers
    beyond 64 bits, which json takes)."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def dumps(data: Any) -> str:
    """The same text as an SSE frame's data: one encoder for both transports."""
    return dumps_bytes(data).decode()


# Text deltas are most of the traffic and differ only in their text: splice it into a frame
# encoded once. The result is byte for byte what dumps_bytes() gives for the same chunk.
_DELTA_HEAD = b'data: {"type":"assistant_message","content":'
_DELTA_TOKEN = b',"token":'
_DELTA_TAIL = (
    b',"is_final":false,"call_id":null,"tool_name":null,"arguments":null,'
    b'"requires_approval":false,"error":null,"metadata":null}\n\n'
)


def sse_frame(data: dict[str, Any], *, event_id: int | None = None) -> bytes:
    """``data: <compact JSON>\\n\\n`` (with an ``id:`` line the Gateway ignores, for resume)."""
    prefix = b"id: %d\n" % event_id if event_id is not None else b""
    if (
        data["type"] == "assistant_message"
        and data["is_final"] is False
        and data["metadata"] is None
        and data["token"] == data["content"]
        and isinstance(data["token"], str)
    ):
        text = dumps_bytes(data["token"])
        return b"".join((prefix, _DELTA_HEAD, text, _DELTA_TOKEN, text, _DELTA_TAIL))
    return b"".join((prefix, b"data: ", dumps_bytes(data), b"\n\n"))


KEEPALIVE_FRAME = b": keepalive\n\n"
