"""Human approval of risky tool calls."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from agent_runtime.errors import Conflict
from sessions.models import AgentSession


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class ApprovalQuerySet(models.QuerySet["Approval"]):
    def pending(self) -> ApprovalQuerySet:
        return self.filter(status=Approval.Status.PENDING)

    def for_session(self, session: AgentSession | str) -> ApprovalQuerySet:
        return self.filter(session=session)


class Approval(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        EDITED = "edited"
        REJECTED = "rejected"
        EXPIRED = "expired"
        CANCELLED = "cancelled"

    class DeciderKind(models.TextChoices):
        IDE = "ide"
        STAFF = "staff"
        SYSTEM = "system"

    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="approvals")
    call_id = models.CharField(max_length=128)
    tool_name = models.CharField(max_length=64)
    arguments = models.JSONField(default=dict, blank=True)
    agent = models.CharField(max_length=32, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by_kind = models.CharField(max_length=8, choices=DeciderKind.choices, blank=True)
    # "ide", "staff:<username>" or "system": what the model and the audit log are told.
    decided_by = models.CharField(max_length=160, blank=True, default="")
    decided_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    edited_arguments = models.JSONField(null=True, blank=True)
    feedback = models.TextField(blank=True, default="")

    objects = ApprovalQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        permissions = [("decide_approval", "Can approve, edit or reject tool calls")]
        constraints = [
            # A tool call has at most one approval.
            models.UniqueConstraint(fields=["session", "call_id"], name="approval_one_per_call"),
            models.CheckConstraint(
                condition=Q(status="pending", decided_at__isnull=True)
                | (~Q(status="pending") & Q(decided_at__isnull=False)),
                name="approval_decided_at_iff_decided",
            ),
        ]
        indexes = [
            # The staff queue and the expiry job: pending approvals, oldest first.
            models.Index(
                fields=["created_at"], name="approval_pending_idx", condition=Q(status="pending")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tool_name} ({self.call_id}) {self.status}"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING

    def decide(
        self,
        *,
        status: str,
        decided_by_kind: str,
        decided_by: str,
        user: Any = None,
        edited_arguments: dict[str, Any] | None = None,
        feedback: str = "",
    ) -> None:
        """pending -> ``status``, with a conditional UPDATE: of concurrent deciders in any
        process exactly one wins; the others get Conflict. The only writer of ``status``."""
        now = timezone.now()
        updated = Approval.objects.filter(pk=self.pk, status=self.Status.PENDING).update(
            status=status,
            decided_at=now,
            decided_by_kind=decided_by_kind,
            decided_by=decided_by,
            decided_by_user=user,
            edited_arguments=edited_arguments,
            feedback=feedback,
        )
        if updated != 1:
            raise Approval.objects.get(pk=self.pk).already_decided()
        self.refresh_from_db()

    def already_decided(self) -> Conflict:
        """The refusal of a second decision (409), saying how this one was decided."""
        return Conflict(
            f"approval for call {self.call_id!r} was already decided "
            f"({self.status} by {self.decided_by or 'someone else'})."
        )

    # --- One wording for each outcome, for the model and for the IDE user -------------------

    @property
    def decider_text(self) -> str:
        return "the IDE user" if self.decided_by == "ide" else self.decided_by or "someone"

    def outcome_text(self) -> str:
        """What happened to the call, in one sentence with the feedback: what the model reads
        (in the call's tool result) and what the IDE user is shown."""
        who = self.decider_text
        if self.status == self.Status.APPROVED:
            text = f"The {self.tool_name} call was approved by {who}"
        elif self.status == self.Status.EDITED:
            text = (
                f"The {self.tool_name} call was edited by {who} before it ran: it ran with "
                f"{_json(self.effective_arguments)} instead of {_json(self.arguments)}"
            )
        elif self.status == self.Status.EXPIRED:
            text = f"The {self.tool_name} call was expired without a decision by {who}"
        elif self.status == self.Status.CANCELLED:
            text = f"The {self.tool_name} call was cancelled by {who}"
        else:
            text = f"The {self.tool_name} call was rejected by {who}"
        if not self.feedback:
            return text + "."
        # PROTOCOL §5's "rejected by <who>: <feedback>"; an edit's sentence is long already.
        return text + (
            f". Feedback: {self.feedback}"
            if self.status == self.Status.EDITED
            else f": {self.feedback}"
        )

    def to_metadata(self) -> dict[str, Any]:
        """The decision, for a chunk's ``metadata`` (the IDE user learns who and why)."""
        return {
            "decision": {
                "status": self.status,
                "decided_by": self.decided_by,
                "feedback": self.feedback or None,
                "summary": self.outcome_text(),
            }
        }

    @property
    def effective_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = (
            self.edited_arguments if self.edited_arguments is not None else self.arguments
        )
        return arguments

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.call_id,  # as in the pending list: clients decide by it
            "session_id": self.session_id,
            "call_id": self.call_id,
            "tool_name": self.tool_name,
            "arguments": self.arguments,
            "agent": self.agent or None,
            "reason": self.reason,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decided_by": self.decided_by or None,
            "edited_arguments": self.edited_arguments,
            "feedback": self.feedback,
        }

    def to_pending_dict(self) -> dict[str, Any]:
        """The [compat] entry of GET /sessions/{id}/pending-approvals."""
        return {
            # [compat] The call's id, as in the original: IDEs answer a decision by it.
            "request_id": self.call_id,
            "request_type": "tool",
            "subject": self.tool_name,
            "details": {"arguments": self.arguments},
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "call_id": self.call_id,
            "tool_name": self.tool_name,
            "arguments": self.arguments,
            "status": self.status,
            "agent": self.agent or None,
        }
