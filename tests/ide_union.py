"""The IDE's chunk decoder as a test oracle: every chunk any test reads is checked by it.

The codelab IDE decodes each server frame into a closed union keyed on ``type`` (a freezed
``WSMessage`` in Dart) and fails on a frame it cannot decode: an unknown type, a number where
it expects a string, a missing required field. ``check_chunk`` accepts what that decoder
accepts and also holds every chunk to PROTOCOL §3.2 (all ten keys, in order). Written out here
from the protocol and the IDE's types, never imported from the code under test.
"""

from __future__ import annotations

from typing import Any

KEYS = (
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
# The members of the union a server may send on IDE-facing streams.
TYPES = ("assistant_message", "tool_call", "agent_switched", "error")
STRINGS = ("content", "token", "error", "call_id", "tool_name")  # String? in the IDE
BOOLEANS = ("is_final", "requires_approval")
OBJECTS = ("arguments", "metadata")  # Map<String, dynamic>? in the IDE
CONFIDENCE_LEVELS = ("high", "medium", "low")


class UndecodableChunk(AssertionError):
    """A chunk the IDE would fail to decode (or one that breaks PROTOCOL §3.2)."""


def check_chunk(chunk: Any) -> dict[str, Any]:
    """``chunk`` (decoded JSON) if the IDE can decode it; raises UndecodableChunk otherwise."""

    def refuse(why: str) -> UndecodableChunk:
        return UndecodableChunk(f"{why}: {chunk!r}")

    if not isinstance(chunk, dict):
        raise refuse("a chunk must be a JSON object")
    if tuple(chunk) != KEYS:
        raise refuse(f"the keys must be {KEYS} in this order, not {tuple(chunk)}")
    if chunk["type"] not in TYPES:
        raise refuse(f"type must be one of {TYPES}")
    for key in STRINGS:
        if chunk[key] is not None and not isinstance(chunk[key], str):
            raise refuse(f"{key} must be a string or null")
    for key in BOOLEANS:
        if not isinstance(chunk[key], bool):
            raise refuse(f"{key} must be true or false")
    for key in OBJECTS:
        if chunk[key] is not None and not isinstance(chunk[key], dict):
            raise refuse(f"{key} must be an object or null")
    if chunk["type"] == "tool_call":
        # Required in the IDE's WSToolCall: call_id and tool_name Strings, arguments a Map.
        if not isinstance(chunk["call_id"], str) or not isinstance(chunk["tool_name"], str):
            raise refuse("a tool_call needs call_id and tool_name strings")
        if not isinstance(chunk["arguments"], dict):
            raise refuse("a tool_call's arguments must be an object")
    if chunk["type"] == "agent_switched":
        metadata = chunk["metadata"]
        if not isinstance(metadata, dict):
            raise refuse("an agent_switched chunk carries its switch in metadata")
        for key in ("from_agent", "to_agent", "reason"):
            if not isinstance(metadata.get(key), str):
                raise refuse(f"an agent_switched chunk's metadata.{key} must be a string")
        # String? in the IDE: a number fails to decode.
        confidence = metadata.get("confidence")
        if confidence is not None and confidence not in CONFIDENCE_LEVELS:
            raise refuse(f"metadata.confidence must be one of {CONFIDENCE_LEVELS} or null")
    return chunk
