"""What a staff login may do with sessions, in the admin's own terms, for the session socket and
the playground alike (one answer for both)."""

from __future__ import annotations

from typing import Any

DECIDE_PERMISSION = "approvals.decide_approval"
# The admin shows a session to whoever may view (or change) it.
SESSION_VIEW_PERMISSIONS = (
    "agent_sessions.view_agentsession",
    "agent_sessions.change_agentsession",
)


def may_decide(user: Any) -> bool:
    """Decide approvals, and so act on a session: send messages and tool results."""
    return bool(user.has_perm(DECIDE_PERMISSION))


def may_watch(user: Any) -> bool:
    """See a session live: whoever the admin shows its sessions, or the conversation of a call
    to decide (the decision page)."""
    return may_decide(user) or any(user.has_perm(p) for p in SESSION_VIEW_PERMISSIONS)
