"""A session's full record for ``manage.py export_session``: JSON for tools, Markdown for people.

Both are written piece by piece to a ``write`` callable while the rows are read a page at a
time, so a session of any length is exported in bounded memory. The JSON document's field
names are stable (``format`` and ``version`` say which layout a file has); the Markdown is a
transcript: the session's metadata, then every message with its role, agent and time, each
tool call with its arguments, its approval decision and what became of it, and the agent
switches where they happened.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from django.db.models import Count, Sum
from django.utils import timezone

from agent_runtime.commands import duration_text
from agents.models import AgentContext, AgentSwitch, ToolCall
from approvals.models import Approval
from sessions.models import AgentSession, LLMRequest, Message

FORMAT = "agent-runtime.session-export"
VERSION = 1
PAGE_SIZE = 200  # messages read per query (and their calls and approvals with them)

Write = Callable[[str], object]


class SessionNotFound(LookupError):
    pass


def export_session_get(*, session_id: str) -> AgentSession:
    """Any session with this id, soft-deleted ones too: an operator exports what is stored."""
    session = AgentSession.objects.filter(pk=session_id).first()
    if session is None:
        raise SessionNotFound(f"session {session_id!r} not found")
    return session


# --- Reading, a page at a time ----------------------------------------------------------------


class Page:
    """Messages with the tool calls and approvals they mention, looked up by call id."""

    def __init__(self, session: AgentSession, messages: list[Message]) -> None:
        self.messages = messages
        ids = {m.tool_call_id for m in messages if m.tool_call_id}
        ids |= {c["id"] for m in messages for c in _wire_calls(m) if c.get("id")}
        self.calls = {
            c.call_id: c for c in ToolCall.objects.filter(session=session, call_id__in=ids)
        }
        self.approvals = {
            a.call_id: a for a in Approval.objects.filter(session=session, call_id__in=ids)
        }


def message_pages(session: AgentSession, *, size: int = PAGE_SIZE) -> Iterator[Page]:
    after = 0
    while True:
        messages = list(
            Message.objects.filter(session=session, seq__gt=after).order_by("seq")[:size]
        )
        if not messages:
            return
        yield Page(session, messages)
        after = messages[-1].seq


def _wire_calls(message: Message) -> list[dict[str, Any]]:
    return [c for c in message.tool_calls or [] if isinstance(c, dict)]


def _switches(session: AgentSession) -> Iterator[AgentSwitch]:
    return (
        AgentSwitch.objects.filter(context__session=session)
        .order_by("switched_at", "id")
        .iterator()
    )


def _usage(session: AgentSession) -> dict[str, int]:
    row = LLMRequest.objects.filter(session_id=session.pk).aggregate(
        calls=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    return {
        "model_calls": row["calls"],
        "prompt_tokens": row["prompt"] or 0,
        "completion_tokens": row["completion"] or 0,
    }


def _context(session: AgentSession) -> AgentContext | None:
    return AgentContext.objects.filter(session=session).first()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- JSON ---------------------------------------------------------------------------------------


def session_dict(session: AgentSession) -> dict[str, Any]:
    context = _context(session)
    return {
        "id": session.pk,
        "title": session.title,
        "description": session.description,
        "is_active": session.is_active,
        "created_at": _iso(session.created_at),
        "last_activity": _iso(session.last_activity),
        "deleted_at": _iso(session.deleted_at),
        "message_count": session.message_count,
        "current_agent": context.current_agent if context else None,
        "switch_count": context.switch_count if context else 0,
        "usage": _usage(session),
    }


def tool_call_dict(call: ToolCall) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "tool_name": call.tool_name,
        "arguments": call.arguments,
        "agent": call.agent or None,
        "status": call.status,
        "requires_approval": call.requires_approval,
        "error": call.error or None,
        "created_at": _iso(call.created_at),
        "completed_at": _iso(call.completed_at),
    }


def approval_dict(approval: Approval) -> dict[str, Any]:
    return {**approval.to_dict(), "decided_by_kind": approval.decided_by_kind or None}


def write_json(session: AgentSession, write: Write) -> None:
    """One JSON object; each array is streamed an element a line."""

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)

    def array(name: str, items: Iterator[dict[str, Any]], *, first: bool = False) -> None:
        write(f'{"" if first else ","}\n"{name}": [')
        for n, item in enumerate(items):
            write(("\n" if n == 0 else ",\n") + dump(item))
        write("\n]")

    header = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": timezone.now().isoformat(),
        "session": session_dict(session),
    }
    write("{" + ",\n".join(f"{dump(k)}: {dump(v)}" for k, v in header.items()))
    array("messages", (m.to_dict() for page in message_pages(session) for m in page.messages))
    array(
        "tool_calls",
        (tool_call_dict(c) for c in ToolCall.objects.filter(session=session).iterator()),
    )
    array(
        "approvals",
        (approval_dict(a) for a in Approval.objects.filter(session=session).iterator()),
    )
    array("agent_switches", (s.to_dict() for s in _switches(session)))
    array(
        "llm_requests",
        (r.to_dict() for r in LLMRequest.objects.filter(session_id=session.pk).iterator()),
    )
    write("\n}\n")


# --- Markdown -----------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _fenced(text: str, lang: str = "") -> str:
    """A code block that no backtick run inside ``text`` can close early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _arguments_text(arguments: Any) -> str:
    return _fenced(json.dumps(arguments, ensure_ascii=False, indent=2), "json")


def _call_lines(wire: dict[str, Any], page: Page) -> list[str]:
    function = wire.get("function") or {}
    call_id = str(wire.get("id") or "")
    call = page.calls.get(call_id)
    approval = page.approvals.get(call_id)
    name = call.tool_name if call else str(function.get("name") or "?")
    lines = [
        f"**Tool call** `{name}` (`{call_id}`)"
        + (f" by {call.agent}" if call and call.agent else "")
    ]
    if call is not None:
        lines.append(_arguments_text(call.arguments))
    else:
        lines.append(_fenced(str(function.get("arguments") or ""), "json"))
    if approval is not None:
        if approval.is_pending:
            lines.append(
                f"- Approval: **pending** since {_when(approval.created_at)}"
                + (f" ({approval.reason})" if approval.reason else "")
            )
        else:
            assert approval.decided_at is not None  # a decided approval has its time
            waited = (approval.decided_at - approval.created_at).total_seconds()
            lines.append(
                f"- Approval: **{approval.status}** by {approval.decider_text} "
                f"at {_when(approval.decided_at)}, "
                f"after {duration_text(waited)}"
            )
            lines.append(f"- Decision: {approval.outcome_text()}")
            if approval.edited_arguments is not None:
                lines.append("- Edited arguments:")
                lines.append(_arguments_text(approval.edited_arguments))
    if call is not None:
        outcome = f"- Outcome: {call.status}"
        if call.error and call.status != ToolCall.Status.REJECTED:  # a rejection says it above
            outcome += f": {call.error}"
        lines.append(outcome)
    return lines


def _message_lines(message: Message, page: Page) -> list[str]:
    roles: dict[str, str] = {
        Message.Role.USER: "User",
        Message.Role.ASSISTANT: "Assistant",
        Message.Role.TOOL: "Tool result",
        Message.Role.SYSTEM: "System",
    }
    role = roles.get(message.role, message.role)
    heading = f"### {message.seq}. {role}"
    if message.role == Message.Role.TOOL:
        heading += f": `{message.name or '?'}` (`{message.tool_call_id}`)"
    elif message.agent:
        heading += f" ({message.agent})"
    heading += f" · {_when(message.created_at)}"
    lines = [heading, ""]
    if message.role == Message.Role.TOOL:
        lines.append(_fenced(message.content, "text"))
    elif message.content:
        lines.append(message.content)
    for wire in _wire_calls(message):
        lines += ["", *_call_lines(wire, page)]
    if message.prompt_tokens is not None or message.completion_tokens is not None:
        lines += [
            "",
            f"_tokens: {message.prompt_tokens or 0} prompt, "
            f"{message.completion_tokens or 0} completion_",
        ]
    return [*lines, ""]


def _switch_lines(switch: AgentSwitch) -> list[str]:
    how = ", ".join(
        part
        for part in (
            switch.confidence and f"confidence {switch.confidence}",
            switch.score is not None and f"score {switch.score:.2f}",
        )
        if part
    )
    text = (
        f"> **Agent switch** {switch.from_agent} → {switch.to_agent} · {_when(switch.switched_at)}"
    )
    if switch.reason:
        text += f": {switch.reason}"
    if how:
        text += f" ({how})"
    return [text, ""]


def write_markdown(session: AgentSession, write: Write) -> None:
    info = session_dict(session)
    usage = info["usage"]
    if session.deleted_at:
        status = f"deleted at {_when(session.deleted_at)} (kept until the purge)"
    else:
        status = "active" if session.is_active else "inactive"
    agent = info["current_agent"] or "-"
    rows = [
        ("Session", f"`{session.pk}`"),
        ("Status", status),
        ("Created", _when(session.created_at)),
        ("Last activity", _when(session.last_activity)),
        ("Messages", str(session.message_count)),
        ("Current agent", f"{agent} ({info['switch_count']} switch(es))"),
        (
            "Model usage",
            f"{usage['model_calls']} call(s), {usage['prompt_tokens']} prompt + "
            f"{usage['completion_tokens']} completion tokens",
        ),
        ("Exported", _when(timezone.now())),
    ]
    head = [f"# {session.title or session.pk}", ""]
    if session.description:
        head += [session.description, ""]
    head += ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "", "## Conversation", ""]
    write("\n".join(head) + "\n")
    switches = _switches(session)
    pending_switch = next(switches, None)
    for page in message_pages(session):
        for message in page.messages:
            # Switches go where they happened: before the first message written after them.
            while pending_switch is not None and pending_switch.switched_at <= message.created_at:
                write("\n".join(_switch_lines(pending_switch)) + "\n")
                pending_switch = next(switches, None)
            write("\n".join(_message_lines(message, page)) + "\n")
    while pending_switch is not None:
        write("\n".join(_switch_lines(pending_switch)) + "\n")
        pending_switch = next(switches, None)
