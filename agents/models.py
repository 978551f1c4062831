"""Which agent a session talks to, how it got there, and the tool calls its agents made."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from agents.chunks import CONFIDENCE_LEVELS, switched_chunk
from sessions.models import AgentSession


class AgentContext(models.Model):
    session = models.OneToOneField(
        AgentSession, on_delete=models.CASCADE, related_name="agent_context"
    )
    current_agent = models.CharField(max_length=32)
    switch_count = models.PositiveIntegerField(default=0)
    last_switch_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "agent context"

    def __str__(self) -> str:
        return f"{self.session_id}: {self.current_agent}"

    def to_dict(self, *, switch_history: list[AgentSwitch] | None = None) -> dict[str, Any]:
        return {
            "id": self.pk,
            "session_id": self.session_id,
            "current_agent": self.current_agent,
            "switch_count": self.switch_count,
            "switch_history": (
                None if switch_history is None else [s.to_dict() for s in switch_history]
            ),
            "last_switch_at": self.last_switch_at.isoformat() if self.last_switch_at else None,
            "created_at": self.created_at.isoformat(),
        }


class AgentSwitch(models.Model):
    context = models.ForeignKey(AgentContext, on_delete=models.CASCADE, related_name="switches")
    from_agent = models.CharField(max_length=32)
    to_agent = models.CharField(max_length=32)
    reason = models.TextField(blank=True, default="")
    # The level the IDE reads ("" for none) and, when a router chose, its score in [0, 1].
    confidence = models.CharField(
        max_length=8, blank=True, default="", choices=[(c, c) for c in CONFIDENCE_LEVELS]
    )
    score = models.FloatField(null=True, blank=True)
    switched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["switched_at", "id"]
        verbose_name_plural = "agent switches"

    def __str__(self) -> str:
        return f"{self.from_agent} → {self.to_agent}"

    def to_chunk(self, *, is_final: bool) -> dict[str, Any]:
        """The ``agent_switched`` chunk announcing this switch."""
        return switched_chunk(
            from_agent=self.from_agent,
            to_agent=self.to_agent,
            reason=self.reason,
            confidence=self.confidence or None,
            score=self.score,
            is_final=is_final,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_agent": self.from_agent,
            "to_agent": self.to_agent,
            "reason": self.reason,
            "confidence": self.confidence or None,
            "switched_at": self.switched_at.isoformat(),
            "score": self.score,
        }


class ToolCallQuerySet(models.QuerySet["ToolCall"]):
    def for_session(self, session: AgentSession | str) -> ToolCallQuerySet:
        return self.filter(session=session)

    def outstanding(self) -> ToolCallQuerySet:
        """Calls sent to the IDE (or to a human) whose result has not come back."""
        return self.filter(status__in=ToolCall.OUTSTANDING)

    def queued(self) -> ToolCallQuerySet:
        return self.filter(status=ToolCall.Status.QUEUED).order_by("id")


class ToolCall(models.Model):
    """A tool call the model made, and where it stands.

    Several calls in one model reply go out one at a time: the rest wait as ``queued``.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"  # made by the model, not yet sent
        EMITTED = "emitted"  # sent to the IDE, waiting for its tool_result
        AWAITING_APPROVAL = "awaiting_approval"  # sent, waiting for a human decision
        COMPLETED = "completed"  # the IDE returned a result
        FAILED = "failed"  # the IDE returned an error
        REFUSED = "refused"  # the runtime's policy refused it; the model was told why
        REJECTED = "rejected"  # a human (or expiry) rejected it
        HANDLED = "handled"  # executed by the runtime itself (switch_mode)
        CANCELLED = "cancelled"  # the turn was cancelled before a result came

    OUTSTANDING = (Status.EMITTED, Status.AWAITING_APPROVAL)

    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="tool_calls")
    call_id = models.CharField(max_length=128)
    tool_name = models.CharField(max_length=64)
    arguments = models.JSONField(default=dict, blank=True)
    agent = models.CharField(max_length=32, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    requires_approval = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = ToolCallQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "call_id"], name="toolcall_session_call_uniq"
            ),
        ]
        indexes = [
            # Finding a session's outstanding / queued calls on every tool_result.
            models.Index(
                fields=["session", "status"],
                name="toolcall_open_idx",
                condition=Q(status__in=["queued", "emitted", "awaiting_approval"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tool_name} {self.call_id}"

    # --- The call's life: these methods are the only writers of ``status`` ---------------------
    # queued -> emitted | awaiting_approval | refused | handled | cancelled
    # awaiting_approval -> emitted (approved or edited) | rejected (or expired) | cancelled
    # emitted -> completed | failed | cancelled

    TRANSITIONS: dict[str, tuple[str, ...]] = {
        Status.QUEUED: (
            Status.EMITTED,
            Status.AWAITING_APPROVAL,
            Status.REFUSED,
            Status.HANDLED,
            Status.CANCELLED,
        ),
        Status.AWAITING_APPROVAL: (Status.EMITTED, Status.REJECTED, Status.CANCELLED),
        Status.EMITTED: (Status.COMPLETED, Status.FAILED, Status.CANCELLED),
    }

    def _move(self, to: str, *fields: str) -> None:
        if to not in self.TRANSITIONS.get(self.status, ()):
            raise ValueError(f"tool call {self.call_id} cannot go from {self.status} to {to}")
        self.status = to
        if to not in self.TRANSITIONS:  # an end state
            self.completed_at = timezone.now()
            fields = (*fields, "completed_at")
        self.save(update_fields=["status", *fields])

    def send(self, *, arguments: dict[str, Any], needs_approval: bool) -> None:
        """Out to the IDE, or first to a human."""
        self.arguments = arguments
        self.requires_approval = needs_approval
        to = self.Status.AWAITING_APPROVAL if needs_approval else self.Status.EMITTED
        self._move(to, "arguments", "requires_approval")

    def release(self, *, arguments: dict[str, Any]) -> None:
        """A human approved it (with these arguments, edited or not): out to the IDE."""
        self.arguments = arguments
        self._move(self.Status.EMITTED, "arguments")

    def settle(self, to: str, *, error: str = "") -> None:
        """An end state: completed, failed, refused, rejected, handled or cancelled."""
        self.error = error
        self._move(to, "error")
