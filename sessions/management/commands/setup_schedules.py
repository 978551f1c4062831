"""Declare every scheduled maintenance task (idempotent: safe to run on every start)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django_q.models import Schedule

SCHEDULES = [
    # (name, function, minutes between runs)
    ("expire-approvals", "approvals.tasks.expire_approvals", 5),
    ("purge-sessions", "sessions.tasks.purge_sessions", 24 * 60),
]


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules for maintenance tasks."

    def handle(self, *args: Any, **options: Any) -> None:
        for name, func, minutes in SCHEDULES:
            Schedule.objects.update_or_create(
                name=name,
                defaults={
                    "func": func,
                    "schedule_type": Schedule.MINUTES,
                    "minutes": minutes,
                    "repeats": -1,
                },
            )
        self.stdout.write(f"{len(SCHEDULES)} schedule(s) declared")
