"""Chunk shapes and SSE framing ([compat] PROTOCOL §3.1-§3.2)."""

from __future__ import annotations

import json

import pytest

from agents.chunks import (
    confidence_level,
    dumps,
    error_chunk,
    sse_frame,
    switched_chunk,
    token_chunk,
    tool_call_chunk,
)
from tests.ide_union import UndecodableChunk, check_chunk


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
    check_chunk(json.loads(frame[6:]))  # every key, in order, each of the IDE's type
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


def _chunk(**fields):
    blank = dict.fromkeys(
        ["type", "content", "token", "is_final", "call_id", "tool_name", "arguments"]
        + ["requires_approval", "error", "metadata"]
    )
    return {**blank, "is_final": False, "requires_approval": False, **fields}


SWITCH = {"from_agent": "a", "to_agent": "b", "reason": "r", "confidence": "high"}


@pytest.mark.parametrize(
    "bad",
    [
        _chunk(type="progress"),  # not a member of the IDE's union
        {**_chunk(type="error"), "extra": 1},
        {k: v for k, v in _chunk(type="error").items() if k != "metadata"},
        dict(reversed(_chunk(type="error").items())),
        _chunk(type="assistant_message", content=5),
        _chunk(type="assistant_message", is_final=None),
        _chunk(type="error", metadata="x"),
        _chunk(type="tool_call", call_id="c", tool_name="t", arguments=None),
        _chunk(type="tool_call", call_id="c", tool_name="t", arguments='{"a": 1}'),
        _chunk(type="tool_call", tool_name="t", arguments={}),
        _chunk(type="agent_switched", metadata={**SWITCH, "confidence": 0.8}),
        _chunk(type="agent_switched", metadata={**SWITCH, "confidence": "sure"}),
        _chunk(type="agent_switched", metadata={**SWITCH, "reason": None}),
        _chunk(type="agent_switched"),
    ],
)
def test_the_ide_decoder_refuses_what_the_ide_cannot_read(bad):
    with pytest.raises(UndecodableChunk):
        check_chunk(bad)


def test_the_ide_decoder_takes_what_the_ide_reads():
    for good in [
        _chunk(type="assistant_message", content="hi", token="hi"),
        _chunk(type="tool_call", call_id="c", tool_name="t", arguments={}, is_final=True),
        _chunk(type="agent_switched", metadata={**SWITCH, "confidence": None, "score": 0.3}),
        _chunk(type="error", content="x", error="x", is_final=True, metadata={"status": 404}),
    ]:
        assert check_chunk(good) is good
