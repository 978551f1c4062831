"""Signals of the sessions app: the core tells the apps built on it, and knows none of them."""

from __future__ import annotations

from django.dispatch import Signal

# Inside the creating transaction, with ``session`` (an AgentSession) and ``now``: set up what
# a session needs (the agents app gives it its agent context). A receiver that raises undoes
# the creation.
session_created = Signal()

# Inside the deleting transaction, with ``session_id``: close what must not outlive it (the
# agents app cancels its open tool calls and pending approvals).
session_deleting = Signal()
