"""Chunk shapes and SSE framing ([compat] PROTOCOL §3.1-§3.2)."""

from __future__ import annotations

import json

import pytest

from agents.chunks import (
    CHUNK_KEYS,
    confidence_level,
    dumps,
    error_chunk,
    sse_frame,
    switched_chunk,
    token_chunk,
    tool_call_chunk,
)


@pytest.mark.parametrize(
    "text", ["hi", "", 'quote " backslash \\ newline \n', "é ü 中文 🙂", "\u2028"]
)
def test_the_token_fast_path_is_byte_identical(text):
    chunk = token_chunk(text)
    assert sse_frame(chunk) == f"data: {dumps(chunk)}\n\n".encode()
    assert json.loads(sse_frame(chunk)[len(b"data: ") : -2]) == chunk


@pytest.mark.parametrize(
    "chunk",
    [
        token_chunk("", is_final=True),
        tool_call_chunk(
            call_id="c", tool_name="read_file", arguments={"path": "a"}, requires_approval=True
        ),
        switched_chunk(from_agent="a", to_agent="b", reason="r", confidence=None, is_final=False),
        switched_chunk(
            from_agent="a", to_agent="b", reason="r", confidence="low", score=0.2, is_final=True
        ),
        error_chunk("boom"),
    ],
)
def test_every_chunk_has_every_key_in_order(chunk):
    frame = sse_frame(chunk)
    assert frame.startswith(b"data: {") and frame.endswith(b"}\n\n")
    assert b"\n" not in frame[:-2]
    assert tuple(json.loads(frame[6:])) == CHUNK_KEYS
    assert chunk["requires_approval"] in (True, False)


def test_an_error_chunk_is_final_with_its_text_twice():
    chunk = error_chunk("it broke")
    assert chunk["is_final"] is True
    assert chunk["error"] == chunk["content"] == "it broke"


@pytest.mark.parametrize(
    ("score", "level"),
    [
        (1.0, "high"),
        (0.8, "high"),
        (0.7999, "medium"),
        (0.5, "medium"),
        (0.4999, "low"),
        (0.0, "low"),
        (None, None),
    ],
)
def test_it_names_a_score_by_its_level(score, level):
    assert confidence_level(score) == level
