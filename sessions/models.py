"""Sessions, their message history, the audit log and LLM usage records."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

# Finish reasons of a reply that is not whole: the provider's length limit, or a stream that
# broke after some of its text had reached the user.
TRUNCATED_REASONS = frozenset({"length", "interrupted"})


class SessionQuerySet(models.QuerySet["AgentSession"]):
    def live(self) -> SessionQuerySet:
        """Sessions that have not been soft-deleted: the only ones the API shows."""
        return self.filter(deleted_at__isnull=True)

    def active(self) -> SessionQuerySet:
        return self.live().filter(is_active=True)


class AgentSession(models.Model):
    id = models.CharField(primary_key=True, max_length=64)
    title = models.CharField(max_length=200, blank=True, default="")
    description = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)
    # Kept in step by message_append so listings need no COUNT per row.
    message_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    last_activity = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The cross-process turn lease (see sessions.locks): who runs a turn now, and until when.
    turn_owner = models.CharField(max_length=64, blank=True, default="")
    turn_expires_at = models.DateTimeField(null=True, blank=True)

    objects = SessionQuerySet.as_manager()

    class Meta:
        verbose_name = "session"
        indexes = [
            # GET /sessions: live sessions, newest activity first.
            models.Index(
                fields=["-last_activity"],
                name="session_live_activity_idx",
                condition=Q(deleted_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.title or self.id

    @property
    def duration_seconds(self) -> float:
        return max(0.0, (self.last_activity - self.created_at).total_seconds())


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"
        SYSTEM = "system"

    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    tool_calls = models.JSONField(null=True, blank=True)
    tool_call_id = models.CharField(max_length=128, blank=True, default="")
    name = models.CharField(max_length=64, blank=True, default="")
    agent = models.CharField(max_length=32, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # The provider reported no usage; the figures above are the runtime's estimate.
    usage_estimated = models.BooleanField(default=False)
    # How an assistant reply ended: the provider's finish_reason ("stop", "length", ...),
    # "interrupted" when the stream broke mid-answer, "cancelled"; "" when not known.
    finish_reason = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["seq"]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="message_session_seq_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.role}"

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat form of PROTOCOL §6 (also what the LLM is sent)."""
        return openai_message(
            self.role, self.content, self.tool_calls, self.tool_call_id, self.name
        )

    def tool_calls_shown(self) -> list[dict[str, str]]:
        """The assistant's tool calls for a page: id, name and the arguments indented (stored
        OpenAI-style as a JSON string; a string that is not JSON is shown as it is)."""
        shown = []
        for call in self.tool_calls or []:
            if not isinstance(call, dict):
                continue
            function = call.get("function") or {}
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except json.JSONDecodeError:
                    pass
            shown.append(
                {
                    "id": call.get("id", ""),
                    "name": function.get("name", "?"),
                    "arguments": (
                        arguments
                        if isinstance(arguments, str)
                        else json.dumps(arguments, indent=2, ensure_ascii=False)
                    ),
                }
            )
        return shown

    def to_dict(self) -> dict[str, Any]:
        """The history form: OpenAI fields plus what the runtime knows about the message."""
        data = self.to_openai()
        data["seq"] = self.seq
        data["agent"] = self.agent or None
        data["created_at"] = self.created_at.isoformat()
        if self.prompt_tokens is not None or self.completion_tokens is not None:
            data["usage"] = {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "estimated": self.usage_estimated,
            }
        if self.finish_reason:
            data["finish_reason"] = self.finish_reason
            data["truncated"] = self.truncated
        return data

    @property
    def truncated(self) -> bool:
        """The reply is not whole: cut by the length limit or a broken stream."""
        return self.finish_reason in TRUNCATED_REASONS


def openai_message(
    role: str, content: str, tool_calls: Any, tool_call_id: str, name: str
) -> dict[str, Any]:
    """A stored message's role, content, tool_calls, tool_call_id and name in the OpenAI chat
    form (sessions.selectors.llm_messages reads just those columns)."""
    data: dict[str, Any] = {"role": role, "content": content or ""}
    if role == Message.Role.ASSISTANT and tool_calls:
        data["tool_calls"] = tool_calls
    if role == Message.Role.TOOL:
        data["tool_call_id"] = tool_call_id
        if name:
            data["name"] = name
    return data


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def for_session(self, session_id: str) -> AuditEventQuerySet:
        return self.filter(session_id=session_id)


class AuditEvent(models.Model):
    """One thing that happened: the audit log, and the source of the event metrics."""

    class Type(models.TextChoices):
        SESSION_CREATED = "session_created"
        SESSION_DELETED = "session_deleted"
        MESSAGE_RECEIVED = "message_received"
        AGENT_SWITCHED = "agent_switched"
        AGENT_PROCESSED = "agent_processed"
        TOOL_REQUESTED = "tool_requested"
        TOOL_REFUSED = "tool_refused"
        TOOL_COMPLETED = "tool_completed"
        TOOL_FAILED = "tool_failed"
        APPROVAL_REQUESTED = "approval_requested"
        HITL_DECISION = "hitl_decision"
        ERROR = "error"

    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event_type = models.CharField(max_length=32, choices=Type.choices)
    timestamp = models.DateTimeField(default=timezone.now)
    # A plain string, not a foreign key: the audit outlives purged sessions.
    session_id = models.CharField(max_length=64, blank=True, default="")
    correlation_id = models.CharField(max_length=64, blank=True, default="")
    agent = models.CharField(max_length=32, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [
            # GET /events/audit-log?session_id=&event_type=
            models.Index(fields=["session_id", "-timestamp"], name="audit_session_ts_idx"),
            models.Index(fields=["event_type", "-timestamp"], name="audit_type_ts_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.session_id}"

    def to_dict(self) -> dict[str, Any]:
        data = {
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "timestamp": self.timestamp.isoformat(),
            "session_id": self.session_id or None,
            "correlation_id": self.correlation_id or None,
            "agent": self.agent or None,
        }
        # Type-specific fields sit beside the common ones; they never override them.
        for key, value in self.data.items():
            data.setdefault(key, value)
        return data


class LLMRequest(models.Model):
    """One call to the model: the source of per-session LLM usage."""

    session_id = models.CharField(max_length=64, db_index=True)
    agent = models.CharField(max_length=32, blank=True, default="")
    purpose = models.CharField(max_length=16, default="turn")  # turn | classify
    provider = models.CharField(max_length=32, default="")
    model = models.CharField(max_length=128, blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    success = models.BooleanField(default=True)
    error = models.CharField(max_length=500, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)  # no usage reported: our estimate
    has_tool_calls = models.BooleanField(default=False)
    finish_reason = models.CharField(max_length=32, blank=True, default="")  # as Message's

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.session_id} {self.agent} {self.duration_ms}ms"

    def to_dict(self) -> dict[str, Any]:
        """A ``requests`` entry of GET /events/metrics/session/{id}: the [compat] keys first."""
        return {
            "timestamp": self.started_at.isoformat(),
            "model": self.model or None,
            "duration_ms": self.duration_ms,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "has_tool_calls": self.has_tool_calls,
            "success": self.success,
            "error": self.error or None,
            "usage_estimated": self.usage_estimated,
            "agent": self.agent or None,
            "purpose": self.purpose,
            "provider": self.provider,
            "started_at": self.started_at.isoformat(),
            "finish_reason": self.finish_reason or None,
            "truncated": self.finish_reason in TRUNCATED_REASONS,
        }
