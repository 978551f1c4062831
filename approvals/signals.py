"""Signals of the approvals app."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once a decision made outside a turn (REST, the admin, expiry) is committed, with
# ``approval``: whoever runs turns (agents.turns) continues the session from it. The decision
# service sends it itself, so no caller has to remember to.
approval_decided = Signal()
