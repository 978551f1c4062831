from __future__ import annotations

from django.apps import AppConfig


class SessionsConfig(AppConfig):
    # The label keeps this app apart from django.contrib.sessions, which the admin needs.
    name = "sessions"
    label = "agent_sessions"
    verbose_name = "Sessions"
    default_auto_field = "django.db.models.BigAutoField"
