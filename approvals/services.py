"""The one decision service every interface uses: IDE, REST, WebSocket, admin, expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from agent_runtime.errors import ApplicationError, Conflict, NotFound
from agents.models import ToolCall
from agents.policy import get_policy
from agents.registry import UnknownAgent, get_agent
from approvals.models import Approval
from approvals.signals import approval_decided
from sessions.models import AuditEvent, Message
from sessions.services import audit_record, message_append

DECISION_STATUS = {
    "approve": Approval.Status.APPROVED,
    "edit": Approval.Status.EDITED,
    "reject": Approval.Status.REJECTED,
    # Not for clients: the expiry job and a superseded call (a new user message, a deleted
    # session) decide these.
    "expire": Approval.Status.EXPIRED,
    "cancel": Approval.Status.CANCELLED,
}


def pending_approval(*, session_id: str, call_id: str) -> Approval:
    approval = Approval.objects.filter(session_id=session_id, call_id=call_id).first()
    if approval is None:
        raise NotFound(f"no approval for call {call_id!r} in this session")
    if not approval.is_pending:
        raise approval.already_decided()
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
    resume: bool = True,
) -> Approval:
    """Decide a pending approval and apply it to its tool call, in one transaction: the one
    decision service (hitl_decision, a tool_result for a pending call, REST, the admin,
    expiry and cancellation all come here).

    approve/edit: the call goes out to the IDE (an edit is re-checked against the agent's
    policy; a forbidden edit is refused and nothing changes). reject/expire/cancel: a tool
    result saying what happened, who decided and why goes into the history. With ``resume``
    (decisions made outside a turn) the session continues once the decision is committed
    (the ``approval_decided`` signal); a turn that decides (a client's message) continues by
    itself.
    """
    if decision not in DECISION_STATUS:
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
    with transaction.atomic():
        call = ToolCall.objects.select_for_update().get(session_id=session_id, call_id=call_id)
        approval.decide(
            status=DECISION_STATUS[decision],
            decided_by_kind=decided_by_kind,
            decided_by=decided_by,
            user=user,
            edited_arguments=modified_arguments if decision == "edit" else None,
            feedback=feedback,
        )
        audit_record(
            event_type=AuditEvent.Type.HITL_DECISION,
            session_id=session_id,
            agent=approval.agent,
            call_id=call_id,
            tool_name=approval.tool_name,
            decision=approval.status,
            decided_by=decided_by,
            feedback=feedback,
        )
        if decision in ("approve", "edit"):
            call.release(arguments=approval.effective_arguments)
        else:
            text = approval.outcome_text()
            message_append(
                session=session_id,
                role=Message.Role.TOOL,
                content=text,
                tool_call_id=call_id,
                name=approval.tool_name,
                agent=call.agent,
            )
            ended = ToolCall.Status.CANCELLED if decision == "cancel" else ToolCall.Status.REJECTED
            call.settle(ended, error=text)
        if resume:
            # robust: the decision stands even if continuing the session fails (it is logged).
            transaction.on_commit(
                lambda: approval_decided.send(sender=Approval, approval=approval), robust=True
            )
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
                    # The job queues one task per session to continue (approvals.tasks), so
                    # one slow model call never holds up the others' expiry.
                    resume=False,
                )
            )
        except Conflict:
            continue  # decided by someone while we looked: nothing to expire
    return expired
