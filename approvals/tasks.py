"""django-q2 tasks for approvals: thin shells over the decision service."""

from __future__ import annotations

import logging

from agents.turns import resume_after_decision
from approvals.services import approvals_expire

logger = logging.getLogger(__name__)


def expire_approvals() -> int:
    """Expire stale pending approvals, then let each session's agent carry on.

    One session that cannot continue (busy, deleted meanwhile, the model down) must not stop
    the others: its failure is logged and the next one goes ahead.
    """
    expired = approvals_expire()
    for approval in expired:
        try:
            resume_after_decision(session_id=approval.session_id, call_id=approval.call_id)
        except Exception:
            logger.exception(
                "session %s did not continue after approval %s expired",
                approval.session_id,
                approval.call_id,
            )
    return len(expired)
