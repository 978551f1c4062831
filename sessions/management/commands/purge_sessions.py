"""Delete deleted or long-idle sessions for good (a dry run unless --for-real)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from agent_runtime.commands import SHOWN, add_for_real, list_rows
from sessions.models import AgentSession
from sessions.selectors import sessions_to_purge
from sessions.services import sessions_purge


def describe(session: AgentSession) -> str:
    if session.deleted_at:
        why = f"deleted {session.deleted_at:%Y-%m-%d %H:%M}"
    else:
        why = f"idle since {session.last_activity:%Y-%m-%d %H:%M}"
    return f"{session.pk}  {why}  {session.message_count} message(s)  {session.title[:60]}"


class Command(BaseCommand):
    help = "Purge soft-deleted sessions and sessions idle past SESSION_RETENTION_DAYS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=settings.SESSION_RETENTION_DAYS,
            help="Purge sessions deleted or idle for longer than this "
            f"(default SESSION_RETENTION_DAYS, {settings.SESSION_RETENTION_DAYS}).",
        )
        add_for_real(parser, "Delete them, with their messages, tool calls and approvals")

    def handle(self, *args: Any, days: int, for_real: bool, **options: Any) -> None:
        doomed = sessions_to_purge(older_than_days=days)
        list_rows(
            self.stdout,
            (describe(s) for s in doomed[:SHOWN]),
            total=doomed.count(),
        )
        count = sessions_purge(older_than_days=days, for_real=for_real)
        verb = "purged" if for_real else "would purge (dry run; add --for-real)"
        self.stdout.write(f"{verb} {count} session(s) older than {days} day(s)")
