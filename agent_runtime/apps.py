from __future__ import annotations

from django.apps import AppConfig


class AgentRuntimeConfig(AppConfig):
    """Project-level wiring: registers the configuration system checks."""

    name = "agent_runtime"
    verbose_name = "Agent runtime"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from agent_runtime import checks  # noqa: F401  (registers the checks)
        from agent_runtime.dbpool import install_check

        connection_created.connect(install_check, dispatch_uid="agent_runtime.dbpool")
