"""Expire pending approvals older than APPROVAL_TTL_SECONDS (a dry run unless --for-real)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from agent_runtime.commands import add_for_real, list_rows
from approvals.models import Approval
from approvals.services import approvals_expire
from approvals.tasks import expire_and_continue


def describe(approval: Approval) -> str:
    waited = int((timezone.now() - approval.created_at).total_seconds())
    return (
        f"{approval.session_id}  {approval.tool_name} ({approval.call_id})  "
        f"by {approval.agent or '-'}, pending {waited} s"
    )


class Command(BaseCommand):
    help = "Expire stale pending approvals (acts like a reject by 'system')."

    def add_arguments(self, parser: CommandParser) -> None:
        add_for_real(parser, "Expire them and let each session's agent carry on, from this process")

    def handle(self, *args: Any, for_real: bool, **options: Any) -> None:
        age = settings.APPROVAL_TTL_SECONDS
        if for_real:
            done = expire_and_continue(inline=True)
            list_rows(self.stdout, map(describe, done), total=len(done))
            self.stdout.write(f"expired {len(done)} approval(s) pending longer than {age} s")
        else:
            stale = approvals_expire(older_than=timedelta(seconds=age), for_real=False)
            list_rows(self.stdout, map(describe, stale), total=len(stale))
            self.stdout.write(
                f"would expire {len(stale)} approval(s) pending longer than {age} s "
                "(dry run; add --for-real)"
            )
