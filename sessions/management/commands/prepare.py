"""Gets a server ready to start (`make run`, `make serve`), in one process rather than four.

It refuses what daphne would refuse (agent_runtime/asgi.py) before touching anything, so that
`make serve` on development secrets stops here; then migrates, declares the schedules and prints
how to reach the server.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agent_runtime.checks import check_limits, check_secrets


class Command(BaseCommand):
    help = "Refuse a configuration daphne would refuse, migrate, declare schedules, print the URL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help="The address the server listens on."
        )
        parser.add_argument("--port", default="8000", help="The port the server listens on.")
        parser.add_argument(
            "--workers", type=int, default=1, help="How many server processes share the port."
        )

    def handle(self, *args: Any, host: str, port: str, workers: int, **options: Any) -> None:
        if problems := check_secrets() + check_limits():
            raise CommandError("refusing to start: " + " ".join(p.msg for p in problems))
        call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_schedules", stdout=self.stdout)
        call_command("banner", host=host, port=port, workers=workers, stdout=self.stdout)
