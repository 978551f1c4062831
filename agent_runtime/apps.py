from __future__ import annotations

from django.apps import AppConfig


class AgentRuntimeConfig(AppConfig):
    """Project-level wiring: registers the configuration system checks."""

    name = "agent_runtime"
    verbose_name = "Agent runtime"

    def ready(self) -> None:
        from agent_runtime import checks  # noqa: F401  (registers the checks)
