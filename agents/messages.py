"""Client messages (PROTOCOL §3): validation shared by the stream endpoint and the WebSocket."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_runtime.errors import ApplicationError

MESSAGE_TYPES = ("user_message", "tool_result", "hitl_decision", "switch_agent")
DECISIONS = ("approve", "edit", "reject")
CALL_ID_MAX = 128
CONTENT_MAX_CHARS = 200_000
REASON_MAX_CHARS = 2000


@dataclass(frozen=True)
class ClientMessage:
    type: str
    content: str = ""
    agent_type: str | None = None
    call_id: str = ""
    result: Any = None
    error: str | None = None
    decision: str = ""
    modified_arguments: dict[str, Any] | None = None
    feedback: str = ""
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _str(data: dict[str, Any], key: str, *, required: bool = False, limit: int = 0) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise ApplicationError(f"message.{key} is required.")
        return ""
    if not isinstance(value, str):
        raise ApplicationError(f"message.{key} must be a string.")
    if required and not value:
        raise ApplicationError(f"message.{key} must not be empty.")
    if limit and len(value) > limit:
        raise ApplicationError(f"message.{key} is too long (at most {limit} characters).")
    return value


def parse_message(message: Any) -> ClientMessage:
    """Validate one client message; raises ApplicationError (400) with an English detail."""
    if not isinstance(message, dict):
        raise ApplicationError("message must be a JSON object with a 'type'.")
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        raise ApplicationError(
            f"unknown message type {kind!r}; expected one of: {', '.join(MESSAGE_TYPES)}."
        )
    if kind == "user_message":
        agent_type = _str(message, "agent_type", limit=32) or None
        return ClientMessage(
            type=kind,
            content=_str(message, "content", limit=CONTENT_MAX_CHARS),
            agent_type=agent_type,
        )
    if kind == "switch_agent":
        return ClientMessage(
            type=kind,
            agent_type=_str(message, "agent_type", required=True, limit=32),
            reason=_str(message, "reason", limit=REASON_MAX_CHARS),
        )
    call_id = _str(message, "call_id", required=True, limit=CALL_ID_MAX)
    if kind == "tool_result":
        error = message.get("error")
        if error is not None and not isinstance(error, str):
            raise ApplicationError("message.error must be a string.")
        return ClientMessage(
            type=kind, call_id=call_id, result=message.get("result"), error=error or None
        )
    return parse_decision(message, call_id=call_id)


def parse_decision(message: dict[str, Any], *, call_id: str) -> ClientMessage:
    from django.conf import settings

    decision = message.get("decision")
    if decision not in DECISIONS:
        raise ApplicationError(f"decision must be one of: {', '.join(DECISIONS)}.")
    modified = message.get("modified_arguments")
    if decision == "edit":
        if modified is None:
            raise ApplicationError("an edit needs modified_arguments (a JSON object).")
        if not isinstance(modified, dict):
            raise ApplicationError("modified_arguments must be a JSON object.")
    elif modified is not None and not isinstance(modified, dict):
        raise ApplicationError("modified_arguments must be a JSON object.")
    return ClientMessage(
        type="hitl_decision",
        call_id=call_id,
        decision=decision,
        modified_arguments=modified if decision == "edit" else None,
        feedback=_str(message, "feedback", limit=settings.APPROVAL_FEEDBACK_MAX_CHARS),
    )


def parse_request(body: Any) -> tuple[str, ClientMessage, bool]:
    """The stream endpoint's body: ``{"session_id", "message": {...}, "wait"?}``."""
    if not isinstance(body, dict):
        raise ApplicationError("the body must be a JSON object.")
    if "message" not in body:
        raise ApplicationError(
            'the body must be {"session_id": ..., "message": {"type": ...}} '
            "(a flat message is not accepted)."
        )
    session_id = body.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise ApplicationError("session_id is required (a string).")
    wait = body.get("wait", True)
    if not isinstance(wait, bool):
        raise ApplicationError("wait must be true or false.")
    return session_id, parse_message(body["message"]), wait
