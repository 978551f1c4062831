"""The one decision service every interface uses: IDE, REST, WebSocket, admin, expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from agent_runtime.errors import ApplicationError, Conflict, NotFound
from approvals.models import Approval
from sessions.models import AuditEvent, Message
from sessions.services import audit_record, message_append

DECISION_STATUS = {
    "approve": Approval.Status.APPROVED,
    "edit": Approval.Status.EDITED,
    "reject": Approval.Status.REJECTED,
}


def approval_claim(
    *,
    approval: Approval,
    status: str,
    decided_by_kind: str,
    decided_by: str,
    user: AbstractBaseUser | None = None,
    edited_arguments: dict[str, Any] | None = None,
    feedback: str = "",
) -> Approval:
    """Claim a pending approval with a conditional UPDATE: exactly one decider wins.

    Raises Conflict when someone else decided first. Writes the audit event; the caller owns
    the transaction and whatever the decision sets in motion.
    """
    now = timezone.now()
    updated = Approval.objects.filter(pk=approval.pk, status=Approval.Status.PENDING).update(
        status=status,
        decided_at=now,
        decided_by_kind=decided_by_kind,
        decided_by=decided_by,
        decided_by_user=user,
        edited_arguments=edited_arguments,
        feedback=feedback,
    )
    if updated != 1:
        current = Approval.objects.get(pk=approval.pk)
        raise Conflict(
            f"approval for call {approval.call_id!r} was already decided "
            f"({current.status} by {current.decided_by or 'someone else'})."
        )
    approval.refresh_from_db()
    audit_record(
        event_type=AuditEvent.Type.HITL_DECISION,
        session_id=approval.session_id,
        agent=approval.agent,
        call_id=approval.call_id,
        tool_name=approval.tool_name,
        decision=status,
        decided_by=decided_by,
        feedback=feedback,
    )
    return approval


def pending_approval(*, session_id: str, call_id: str) -> Approval:
    approval = Approval.objects.filter(session_id=session_id, call_id=call_id).first()
    if approval is None:
        raise NotFound(f"no approval for call {call_id!r} in this session")
    if not approval.is_pending:
        raise Conflict(
            f"approval for call {call_id!r} was already decided "
            f"({approval.status} by {approval.decided_by or 'someone else'})."
        )
    return approval


def approval_decide(
    *,
    session_id: str,
    call_id: str,
    decision: str,
    decided_by_kind: str,
    decided_by: str,
    user: AbstractBaseUser | None = None,
    modified_arguments: dict[str, Any] | None = None,
    feedback: str = "",
) -> Approval:
    """Decide a pending approval and apply it to the tool call, in one transaction.

    approve/edit: the call is released to the IDE (edits re-checked against the agent's policy;
    a forbidden edit is refused and nothing changes). reject/expire: a tool result saying who
    rejected it, and why, goes into the history. The caller then resumes the session
    (agents.turns.resume) after commit, which emits the call or lets the agent continue.
    """
    from agents.models import ToolCall
    from agents.policy import get_policy
    from agents.registry import UnknownAgent, get_agent

    if decision not in (*DECISION_STATUS, "expire"):
        raise ApplicationError("decision must be one of: approve, edit, reject.")
    if len(feedback) > settings.APPROVAL_FEEDBACK_MAX_CHARS:
        raise ApplicationError(
            f"feedback is too long (at most {settings.APPROVAL_FEEDBACK_MAX_CHARS} characters)."
        )
    if decision == "edit" and not isinstance(modified_arguments, dict):
        raise ApplicationError("an edit needs modified_arguments (a JSON object).")
    approval = pending_approval(session_id=session_id, call_id=call_id)
    if decision == "edit":
        try:
            spec = get_agent(approval.agent)
        except UnknownAgent as exc:
            raise ApplicationError(str(exc)) from None
        refusal = get_policy().check(
            agent=spec, tool_name=approval.tool_name, arguments=modified_arguments or {}
        )
        if refusal is not None:
            raise ApplicationError(f"the edited call is not allowed: {refusal.reason}")
    status = Approval.Status.EXPIRED if decision == "expire" else DECISION_STATUS[decision]
    with transaction.atomic():
        call = ToolCall.objects.select_for_update().get(session_id=session_id, call_id=call_id)
        approval = approval_claim(
            approval=approval,
            status=status,
            decided_by_kind=decided_by_kind,
            decided_by=decided_by,
            user=user,
            edited_arguments=modified_arguments if decision == "edit" else None,
            feedback=feedback,
        )
        if decision in ("approve", "edit"):
            if decision == "edit":
                call.arguments = modified_arguments
            call.status = ToolCall.Status.EMITTED
            call.save(update_fields=["arguments", "status"])
        else:
            why = "expired without a decision" if decision == "expire" else "rejected"
            text = f"The {approval.tool_name} call was {why} by {decided_by}"
            text += f": {feedback}" if feedback else "."
            message_append(
                session=session_id,
                role=Message.Role.TOOL,
                content=text,
                tool_call_id=call_id,
                name=approval.tool_name,
                agent=call.agent,
            )
            call.status = ToolCall.Status.REJECTED
            call.error = text
            call.completed_at = timezone.now()
            call.save(update_fields=["status", "error", "completed_at"])
    return approval


def approvals_expire(
    *, older_than: timedelta | None = None, for_real: bool = True
) -> list[Approval]:
    """Expire pending approvals older than APPROVAL_TTL_SECONDS: a reject by ``system``."""
    age = older_than or timedelta(seconds=settings.APPROVAL_TTL_SECONDS)
    stale = list(
        Approval.objects.pending().filter(
            created_at__lt=timezone.now() - age, session__deleted_at__isnull=True
        )
    )
    if not for_real:
        return stale
    expired = []
    for approval in stale:
        try:
            expired.append(
                approval_decide(
                    session_id=approval.session_id,
                    call_id=approval.call_id,
                    decision="expire",
                    decided_by_kind=Approval.DeciderKind.SYSTEM,
                    decided_by="system",
                    feedback=f"no decision within {int(age.total_seconds())} seconds",
                )
            )
        except Conflict:
            continue  # decided by someone while we looked: nothing to expire
    return expired
