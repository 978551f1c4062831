from __future__ import annotations

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents.services import on_session_created, on_session_deleting
        from agents.turns import on_approval_decided
        from approvals.signals import approval_decided
        from sessions.signals import session_created, session_deleting

        # Every session gets an agent context; a deleted one leaves no call waiting.
        session_created.connect(on_session_created, dispatch_uid="agents-context")
        session_deleting.connect(on_session_deleting, dispatch_uid="agents-cancel-calls")

        # A decision made outside a turn (REST, the admin) continues the session once committed.
        approval_decided.connect(on_approval_decided, dispatch_uid="agents-resume")
