"""One frame, one bubble (PROTOCOL §3.2): how a model reply's text reaches the client, over SSE.

In ``token`` mode the final chunk carries the reply's last delta, never ""; in ``message`` mode
each model reply is one chunk. Either way a response ends with exactly one final chunk (the
``stream`` fixture checks that, and every chunk against the IDE's decoder).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents.models import AgentContext
from sessions.models import Message
from sessions.services import session_create
from tests import fakellm
from tests.conftest import parse_sse
from tests.history import text_of

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def new_session(session_id: str = "s1", agent: str = "coder") -> None:
    session_create(session_id=session_id)
    AgentContext.objects.filter(session_id=session_id).update(current_agent=agent)


@sync_to_async
def stored(session_id: str = "s1") -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in Message.objects.filter(session_id=session_id)]


def user(content: str) -> dict[str, Any]:
    return {"type": "user_message", "content": content, "role": "user"}


def shape(chunks: list[dict[str, Any]]) -> list[tuple[str, str | None, bool]]:
    """Each chunk as (type, its text or call id, is_final)."""
    return [
        (c["type"], c["call_id"] if c["type"] == "tool_call" else c["content"], c["is_final"])
        for c in chunks
    ]


@pytest.fixture
def message_mode(settings: Any) -> None:
    settings.STREAM_MODE = "message"


# --- token mode (the default) -----------------------------------------------------------------


async def test_the_first_text_goes_out_before_the_model_sends_more(stream, llm):
    """Holding back one character, not one delta: the first token is not kept waiting."""
    await new_session()
    llm.enqueue(fakellm.text("Thinking hard", delay=3.0))  # the second delta comes 3 s later
    response = await stream.post("s1", user("hi"))
    frames = response.streaming_content.__aiter__()

    async def first_chunks() -> list[dict[str, Any]]:
        while not (chunks := parse_sse(await frames.__anext__())):
            pass  # the keepalive that opens every stream
        return chunks

    first = await asyncio.wait_for(first_chunks(), 2.0)
    assert first[0]["content"] == "Thinking"
    rest = b"".join([frame async for frame in frames])
    assert text_of(first + parse_sse(rest)) == "Thinking hard"


async def test_it_ends_a_reply_with_its_last_delta(stream, llm):
    await new_session()
    llm.enqueue(fakellm.text("Hello there, friend."))
    chunks = await stream.send("s1", user("hi"))
    assert shape(chunks) == [
        # Each delta goes out at once but for its last character, which the next one carries.
        ("assistant_message", "Hello", False),
        ("assistant_message", " there,", False),
        ("assistant_message", " friend", False),
        ("assistant_message", ".", True),
    ]
    assert all(c["token"] == c["content"] for c in chunks)


async def test_a_one_delta_reply_is_one_final_chunk(stream, llm):
    await new_session()
    llm.enqueue(fakellm.text("Done."))
    chunks = await stream.send("s1", user("hi"))
    assert shape(chunks) == [("assistant_message", "Done", False), ("assistant_message", ".", True)]


async def test_text_before_tool_calls_is_never_final(stream, llm):
    await new_session()
    llm.enqueue(
        fakellm.tool_calls([("c1", "read_file", '{"path": "a"}')], text_before="Let me look.")
    )
    chunks = await stream.send("s1", user("read a"))
    assert shape(chunks) == [
        ("assistant_message", "Let", False),
        ("assistant_message", " me", False),
        ("assistant_message", " look", False),
        ("assistant_message", ".", False),
        ("tool_call", "c1", True),
    ]


async def test_text_before_a_hand_off_stays_in_order(stream, llm):
    await new_session()
    llm.enqueue(
        fakellm.tool_calls(
            [("h", "switch_mode", '{"mode": "debug", "reason": "a crash"}')],
            text_before="Handing over.",
        ),
        fakellm.text("Debugging now."),
    )
    chunks = await stream.send("s1", user("it crashes"))
    assert shape(chunks) == [
        ("assistant_message", "Handing", False),
        ("assistant_message", " over", False),
        ("assistant_message", ".", False),
        ("agent_switched", "Switched to debug agent", False),
        ("assistant_message", "Debugging", False),
        ("assistant_message", " now", False),
        ("assistant_message", ".", True),
    ]


async def test_a_failure_mid_stream_comes_after_all_the_text(stream, llm):
    await new_session()
    llm.enqueue(fakellm.drop_after(3))
    chunks = await stream.send("s1", user("hi"))
    assert shape(chunks)[:4] == [
        ("assistant_message", "tok0", False),
        ("assistant_message", " tok1", False),
        ("assistant_message", " tok2", False),
        ("assistant_message", " ", False),  # held back, still sent before the error
    ]
    assert [c["type"] for c in chunks[4:]] == ["error"]
    assert await stored() == [("user", "hi"), ("assistant", "tok0 tok1 tok2 ")]


async def test_a_reply_without_text_ends_with_an_error_not_an_empty_bubble(stream, llm):
    await new_session()
    llm.enqueue(fakellm.text(""))
    chunks = await stream.send("s1", user("hi"))
    assert [c["type"] for c in chunks] == ["error"]
    assert chunks[0]["error"] == (
        "The model returned an empty reply; send another message to continue."
    )
    assert chunks[0]["metadata"] == {"status": 502, "code": "empty_reply"}
    llm.enqueue(fakellm.text("Back."))  # the session goes on
    assert text_of(await stream.send("s1", user("again"))) == "Back."


async def test_a_cancelled_turn_shows_all_it_stored(stream, llm):
    await new_session()
    llm.enqueue(fakellm.tokens(50, delay=0.05))
    response = await stream.post("s1", user("count"))
    frames = response.streaming_content.__aiter__()
    seen = b""
    while seen.count(b'"assistant_message"') < 3:
        seen += await asyncio.wait_for(frames.__anext__(), 5)
    cancelled = await stream.client.post("/sessions/s1/cancel", headers=stream.headers)
    assert cancelled.json()["cancelled"] is True
    seen += b"".join([part async for part in frames])
    chunks = parse_sse(seen)
    assert chunks[-1]["type"] == "error" and chunks[-1]["is_final"] is True
    assert all(c["is_final"] is False for c in chunks[:-1])
    messages = await stored()
    assert messages[-1][0] == "assistant"
    assert text_of(chunks) == messages[-1][1]  # the delta held back reached the client too


# --- message mode -----------------------------------------------------------------------------


@pytest.mark.usefixtures("message_mode")
async def test_message_mode_sends_a_reply_as_one_final_chunk(stream, llm):
    await new_session("s1", agent="orchestrator")
    llm.enqueue(fakellm.classify("coder", 0.9), fakellm.text("Hello there, friend."))
    chunks = await stream.send("s1", user("write a function"))
    assert shape(chunks) == [
        ("agent_switched", "Switched to coder agent", False),
        ("assistant_message", "Hello there, friend.", True),
    ]
    assert chunks[1]["token"] == "Hello there, friend."


@pytest.mark.usefixtures("message_mode")
async def test_message_mode_sends_the_text_before_tool_calls_whole(stream, llm):
    await new_session()
    llm.enqueue(
        fakellm.tool_calls([("c1", "read_file", '{"path": "a"}')], text_before="Let me look."),
        fakellm.text("It says hi."),
    )
    chunks = await stream.send("s1", user("read a"))
    assert shape(chunks) == [
        ("assistant_message", "Let me look.", False),
        ("tool_call", "c1", True),
    ]
    chunks = await stream.send("s1", {"type": "tool_result", "call_id": "c1", "result": "hi"})
    assert shape(chunks) == [("assistant_message", "It says hi.", True)]


@pytest.mark.usefixtures("message_mode")
async def test_message_mode_sends_each_model_reply_of_a_turn_as_its_own_chunk(stream, llm):
    await new_session()
    llm.enqueue(
        fakellm.tool_calls(
            [("h", "switch_mode", '{"mode": "debug", "reason": "a crash"}')],
            text_before="Handing over.",
        ),
        fakellm.text("Debugging now."),
    )
    chunks = await stream.send("s1", user("it crashes"))
    assert shape(chunks) == [
        ("assistant_message", "Handing over.", False),
        ("agent_switched", "Switched to debug agent", False),
        ("assistant_message", "Debugging now.", True),
    ]


@pytest.mark.usefixtures("message_mode")
async def test_message_mode_sends_what_came_before_a_failure(stream, llm):
    await new_session()
    llm.enqueue(fakellm.drop_after(3))
    chunks = await stream.send("s1", user("hi"))
    assert shape(chunks)[:1] == [("assistant_message", "tok0 tok1 tok2 ", False)]
    assert [c["type"] for c in chunks[1:]] == ["error"]


@pytest.mark.usefixtures("message_mode")
async def test_message_mode_refuses_an_empty_reply_the_same_way(stream, llm):
    await new_session()
    llm.enqueue(fakellm.text(""))
    chunks = await stream.send("s1", user("hi"))
    assert [(c["type"], c["metadata"]) for c in chunks] == [
        ("error", {"status": 502, "code": "empty_reply"})
    ]
