"""django-q2 tasks for session maintenance: thin shells over services."""

from __future__ import annotations

from django.conf import settings

from sessions.services import sessions_purge


def purge_sessions() -> int:
    return sessions_purge(older_than_days=settings.SESSION_RETENTION_DAYS, for_real=True)
