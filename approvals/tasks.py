"""django-q2 tasks for approvals: thin shells over the decision service."""

from __future__ import annotations

from agents.turns import resume_after_decision
from approvals.services import approvals_expire


def expire_approvals() -> int:
    """Expire stale pending approvals, then let each session's agent carry on."""
    expired = approvals_expire()
    for approval in expired:
        resume_after_decision(session_id=approval.session_id, call_id=approval.call_id)
    return len(expired)
