"""Gets a server ready to start (`make run`, `make serve`), in one process rather than four.

It refuses what daphne would refuse (agent_runtime/asgi.py) before touching anything, so that
`make serve` on development secrets stops here; then migrates, declares the schedules and prints
how to reach the server.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agent_runtime.checks import check_limits, check_secrets


class Command(BaseCommand):
    help = "Refuse a configuration daphne would refuse, migrate, declare schedules, print the URL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", default="8000")
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args: Any, host: str, port: str, workers: int, **options: Any) -> None:
        if problems := check_secrets() + check_limits():
            raise CommandError("refusing to start: " + " ".join(p.msg for p in problems))
        call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_schedules", stdout=self.stdout)
        self.stdout.write(self.banner(host=host, port=port, workers=workers))

    def banner(self, *, host: str, port: str, workers: int) -> str:
        url = f"http://{host}:{port}"
        # A real key is never printed: terminals end up in scrollback, logs and screenshots.
        dev_key = settings.INTERNAL_API_KEY == settings.DEFAULT_INTERNAL_API_KEY
        key = settings.INTERNAL_API_KEY if dev_key else "$INTERNAL_API_KEY"
        llm = settings.LLM_BASE_URL or "the built-in DEMO model (set LLM_BASE_URL for a real one)"
        db = settings.DATABASES["default"]
        return "\n".join(
            [
                "",
                f"agent-runtime {settings.VERSION} on {url}"
                + (f" ({workers} workers)" if workers > 1 else ""),
                f"  health:     {url}/health",
                f"  admin:      {url}/admin/",
                f"  websocket:  ws://{host}:{port}/ws/<session_id>",
                f"  API key:    X-Internal-Auth: {key}"
                + ("  (development default)" if dev_key else ""),
                f"  LLM:        {llm}",
                f"  database:   {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}",
                "  staff user: .venv/bin/python manage.py createsuperuser",
                f'  try:        curl -s -H "X-Internal-Auth: {key}" -X POST {url}/sessions',
                "",
            ]
        )
