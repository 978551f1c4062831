from __future__ import annotations

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents.turns import on_approval_decided
        from approvals.signals import approval_decided

        # A decision made outside a turn (REST, the admin) continues the session once committed.
        approval_decided.connect(on_approval_decided, dispatch_uid="agents-resume")
