"""django-q2 tasks for approvals: thin shells over the decision service."""

from __future__ import annotations

import logging

from django.conf import settings
from django_q.tasks import async_task

from agents.turns import resume_session as continue_session
from approvals.models import Approval
from approvals.services import approvals_expire

logger = logging.getLogger(__name__)


def expire_approvals(*, inline: bool = False) -> int:
    """Expire stale pending approvals, then let each session's agent carry on.

    Each session continues in a task of its own (a model turn can take a while, and one
    session that cannot continue must not hold up the rest); ``inline`` runs them here, one
    after another, for the management command.
    """
    if not inline and not settings.REDIS_URL:
        # The embedded defaults: the server process expires approvals itself (agents.turns),
        # so that the sessions' open sockets, which only it can reach, hear of it.
        return 0
    return len(expire_and_continue(inline=inline))


def expire_and_continue(*, inline: bool) -> list[Approval]:
    """Expire what is stale and continue each session (here, or in a task each)."""
    expired = approvals_expire()
    for approval in expired:
        if inline:
            resume_session(approval.session_id, approval.call_id)
        else:
            async_task(
                "approvals.tasks.resume_session",
                approval.session_id,
                approval.call_id,
                group="resume-after-decision",
            )
    return expired


def resume_session(session_id: str, call_id: str) -> None:
    """Continue one session after a decision; a failure is logged, never raised further."""
    try:
        continue_session(session_id=session_id, call_id=call_id)
    except Exception:
        logger.exception("session %s did not continue after call %s", session_id, call_id)
