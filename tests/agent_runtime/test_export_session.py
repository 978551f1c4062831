"""``manage.py export_session``: a transcript people can read, and the complete record as JSON.

The session exported is made the real way: a routed turn against the local HTTP server playing
the LLM, a write held for approval, approved with feedback over the stream endpoint, then the
IDE's result.
"""

from __future__ import annotations

import json
import re
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.core.management.base import CommandError

from agent_runtime import transcript
from agent_runtime.management.commands.export_session import Command
from sessions.models import Message
from sessions.services import message_append, session_create, session_delete
from tests import fakellm

WRITE_ARGS = '{"path": "notes.md", "content": "# Notes\\nline two"}'


def user(content: str) -> dict[str, Any]:
    return {"type": "user_message", "content": content, "role": "user"}


async def seed(stream: Any, llm: Any, session_id: str = "x1") -> None:
    await sync_to_async(session_create)(session_id=session_id)
    llm.enqueue(
        fakellm.classify("coder", 0.9),
        fakellm.tool_calls([("w1", "write_file", WRITE_ARGS)]),
        fakellm.text("Wrote the notes."),
    )
    await stream.send(session_id, user("please write my notes"))
    await stream.send(
        session_id,
        {"type": "hitl_decision", "call_id": "w1", "decision": "approve", "feedback": "fine"},
    )
    await stream.send(session_id, {"type": "tool_result", "call_id": "w1", "result": "wrote 2"})


@sync_to_async
def export(*args: str) -> str:
    out = StringIO()
    call_command("export_session", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
async def test_it_writes_a_markdown_transcript_with_the_call_and_its_decision(stream, llm):
    await seed(stream, llm)
    text = await export("x1")
    assert text.startswith("# please write my notes\n")
    assert "| Session | `x1` |" in text
    assert "| Status | active |" in text
    assert "| Messages | 4 |" in text
    assert "| Current agent | coder (1 switch(es)) |" in text
    # Three model calls (routing, the write, the answer): 10 prompt tokens each.
    assert re.search(r"\| Model usage \| 3 call\(s\), 30 prompt \+ \d+ completion tokens \|", text)
    headings = re.findall(r"^### (\d+)\. ([^·]+) · \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", text, re.M)
    assert headings == [
        ("1", "User"),
        ("2", "Assistant (coder)"),
        ("3", "Tool result: `write_file` (`w1`)"),
        ("4", "Assistant (coder)"),
    ]
    # The switch sits where it happened: after the user's message, before the reply.
    switch = text.index("> **Agent switch** orchestrator → coder")
    assert text.index("### 1. User") < switch < text.index("### 2. Assistant")
    assert "(confidence high, score 0.90)" in text
    call = text[text.index("### 2.") : text.index("### 3.")]
    assert "**Tool call** `write_file` (`w1`) by coder" in call
    assert '"path": "notes.md"' in call and '"content": "# Notes\\nline two"' in call
    assert re.search(r"- Approval: \*\*approved\*\* by the IDE user at .+ UTC, after \d+ s", call)
    assert "- Decision: The write_file call was approved by the IDE user: fine" in call
    assert "- Outcome: completed" in call
    result = text[text.index("### 3.") : text.index("### 4.")]
    assert "```text\n" in result and "wrote 2\n```" in result
    assert "Wrote the notes." in text[text.index("### 4.") :]


@pytest.mark.django_db(transaction=True)
async def test_the_json_export_is_the_complete_record_and_round_trips(stream, llm, tmp_path):
    await seed(stream, llm)
    record = json.loads(await export("x1", "--format", "json"))
    assert record["format"] == "agent-runtime.session-export" and record["version"] == 1
    assert list(record) == [
        "format",
        "version",
        "exported_at",
        "session",
        "messages",
        "tool_calls",
        "approvals",
        "agent_switches",
        "llm_requests",
    ]
    session = record["session"]
    assert session["id"] == "x1" and session["title"] == "please write my notes"
    assert session["message_count"] == 4 and session["deleted_at"] is None
    assert session["current_agent"] == "coder" and session["switch_count"] == 1
    assert session["usage"]["model_calls"] == 3 and session["usage"]["prompt_tokens"] == 30
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert [m["seq"] for m in record["messages"]] == [1, 2, 3, 4]
    assert record["messages"][1]["tool_calls"][0]["id"] == "w1"
    assert record["messages"][2]["tool_call_id"] == "w1"
    (call,) = record["tool_calls"]
    assert {k: call[k] for k in ("call_id", "tool_name", "arguments", "status", "agent")} == {
        "call_id": "w1",
        "tool_name": "write_file",
        "arguments": {"path": "notes.md", "content": "# Notes\nline two"},
        "status": "completed",
        "agent": "coder",
    }
    assert call["requires_approval"] is True and call["completed_at"] is not None
    (approval,) = record["approvals"]
    assert approval["status"] == "approved" and approval["decided_by"] == "ide"
    assert approval["decided_by_kind"] == "ide" and approval["feedback"] == "fine"
    (switch,) = record["agent_switches"]
    assert (switch["from_agent"], switch["to_agent"], switch["confidence"]) == (
        "orchestrator",
        "coder",
        "high",
    )
    assert [r["purpose"] for r in record["llm_requests"]] == ["classify", "turn", "turn"]

    # The stored messages, every field, survive the trip through the file unchanged.
    stored = await sync_to_async(
        lambda: [m.to_dict() for m in Message.objects.filter(session_id="x1")]
    )()
    assert record["messages"] == json.loads(json.dumps(stored))
    target = tmp_path / "x1.json"
    said = await export("x1", "--format", "json", "--output", str(target))
    assert said == f"exported session x1 (json) to {target}\n"
    again = json.loads(target.read_text(encoding="utf-8"))
    assert {**again, "exported_at": None} == {**record, "exported_at": None}
    assert [p.name for p in tmp_path.iterdir()] == ["x1.json"]  # no temporary file left


@pytest.mark.django_db
def test_an_unknown_id_is_a_clear_error_and_a_non_zero_exit(capsys):
    with pytest.raises(CommandError, match="session 'nope' not found"):
        call_command("export_session", "nope", stdout=StringIO())
    with pytest.raises(SystemExit) as exit_info:
        Command().run_from_argv(["manage.py", "export_session", "nope"])
    assert exit_info.value.code == 1
    assert "session 'nope' not found" in capsys.readouterr().err


@pytest.mark.django_db
def test_a_failed_export_leaves_no_file(tmp_path):
    target = tmp_path / "out.md"
    with pytest.raises(CommandError):
        call_command("export_session", "nope", "--output", str(target), stdout=StringIO())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.django_db
def test_a_deleted_session_can_still_be_exported():
    session = session_create(session_id="gone")
    message_append(session=session, role="user", content="hello")
    session_delete(session=session)
    text = StringIO()
    call_command("export_session", "gone", stdout=text)
    assert "| Status | deleted at " in text.getvalue()
    assert "hello" in text.getvalue()


@pytest.mark.django_db
def test_a_long_session_is_read_a_page_at_a_time(monkeypatch, django_assert_max_num_queries):
    monkeypatch.setattr(transcript, "PAGE_SIZE", 50)
    session = session_create(session_id="long")
    for n in range(1, 241):
        calls = [{"id": f"c{n}", "type": "function", "function": {"name": "read_file"}}]
        message_append(
            session=session,
            role="assistant" if n % 2 else "user",
            content=f"message {n}",
            tool_calls=calls if n % 2 else None,
        )
    writes: list[str] = []
    session.refresh_from_db()
    # 5 pages of 3 queries each plus a fixed few, however many messages there are.
    with django_assert_max_num_queries(24):
        transcript.write_markdown(session, writes.append)
    text = "".join(writes)
    assert re.findall(r"^### (\d+)\.", text, re.M) == [str(n) for n in range(1, 241)]
    assert len(writes) > 240  # written as it is read, a message at a time
    writes.clear()
    with django_assert_max_num_queries(24):
        transcript.write_json(session, writes.append)
    assert [m["seq"] for m in json.loads("".join(writes))["messages"]] == list(range(1, 241))


def test_a_fence_outlasts_any_backticks_inside():
    fenced = transcript._fenced("a ```` b", "text")
    assert fenced == "`````text\na ```` b\n`````"
