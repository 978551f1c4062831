"""Expire pending approvals older than APPROVAL_TTL_SECONDS (a dry run unless --for-real)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from approvals.services import approvals_expire
from approvals.tasks import expire_approvals


class Command(BaseCommand):
    help = "Expire stale pending approvals (acts like a reject by 'system')."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--for-real", action="store_true", help="Actually expire them.")

    def handle(self, *args: Any, for_real: bool, **options: Any) -> None:
        age = settings.APPROVAL_TTL_SECONDS
        if for_real:
            count = expire_approvals(inline=True)
            self.stdout.write(f"expired {count} approval(s) pending longer than {age} s")
        else:
            stale = approvals_expire(older_than=timedelta(seconds=age), for_real=False)
            self.stdout.write(
                f"would expire {len(stale)} approval(s) pending longer than {age} s "
                "(dry run; add --for-real)"
            )
