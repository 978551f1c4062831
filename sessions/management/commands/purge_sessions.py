"""Delete deleted or long-idle sessions for good (a dry run unless --for-real)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from sessions.services import sessions_purge


class Command(BaseCommand):
    help = "Purge soft-deleted sessions and sessions idle past SESSION_RETENTION_DAYS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=settings.SESSION_RETENTION_DAYS)
        parser.add_argument("--for-real", action="store_true", help="Actually delete.")

    def handle(self, *args: Any, days: int, for_real: bool, **options: Any) -> None:
        count = sessions_purge(older_than_days=days, for_real=for_real)
        verb = "purged" if for_real else "would purge (dry run; add --for-real)"
        self.stdout.write(f"{verb} {count} session(s) older than {days} day(s)")
