"""Prints how to reach a freshly started server (used by `make run`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Print the URL, which API key is in use (never a real one) and how to log in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help="The address the server listens on."
        )
        parser.add_argument("--port", default="8000", help="The port the server listens on.")
        parser.add_argument(
            "--workers", type=int, default=1, help="How many server processes share the port."
        )

    def handle(self, *args: Any, host: str, port: str, workers: int, **options: Any) -> None:
        url = f"http://{host}:{port}"
        # The development default is public (README, settings) and shown so the curl line can be
        # copied as is; any other key is a secret, named by its variable and never printed.
        if settings.INTERNAL_API_KEY == settings.DEFAULT_INTERNAL_API_KEY:
            key_line = (
                f"{settings.DEFAULT_INTERNAL_API_KEY}, the development default "
                "(set INTERNAL_API_KEY for your own)"
            )
            auth = f"'X-Internal-Auth: {settings.DEFAULT_INTERNAL_API_KEY}'"
        else:
            key_line = "the value of INTERNAL_API_KEY (not shown)"
            auth = '"X-Internal-Auth: $INTERNAL_API_KEY"'
        llm = settings.LLM_BASE_URL or "the built-in DEMO model (set LLM_BASE_URL for a real one)"
        db = settings.DATABASES["default"]
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"agent-runtime {settings.VERSION} on {url}"
                    + (f" ({workers} workers)" if workers > 1 else ""),
                    f"  health:     {url}/health",
                    f"  admin:      {url}/admin/",
                    f"  websocket:  ws://{host}:{port}/ws/<session_id>",
                    f"  API key:    {key_line}",
                    f"  LLM:        {llm}",
                    f"  database:   {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}",
                    "  staff user: .venv/bin/python manage.py createsuperuser",
                    f"  try:        curl -s -H {auth} -X POST {url}/sessions",
                    "",
                ]
            )
        )
