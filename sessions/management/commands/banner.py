"""Prints how to reach a freshly started server (used by `make run`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Print the URL, the API key in use and how to create a staff user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", default="8000")

    def handle(self, *args: Any, host: str, port: str, **options: Any) -> None:
        url = f"http://{host}:{port}"
        dev_key = settings.INTERNAL_API_KEY == settings.DEFAULT_INTERNAL_API_KEY
        llm = settings.LLM_BASE_URL or "the built-in DEMO model (set LLM_BASE_URL for a real one)"
        db = settings.DATABASES["default"]
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"agent-runtime {settings.VERSION} on {url}",
                    f"  health:     {url}/health",
                    f"  admin:      {url}/admin/",
                    f"  websocket:  ws://{host}:{port}/ws/<session_id>",
                    f"  API key:    X-Internal-Auth: {settings.INTERNAL_API_KEY}"
                    + ("  (development default)" if dev_key else ""),
                    f"  LLM:        {llm}",
                    f"  database:   {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}",
                    "  staff user: .venv/bin/python manage.py createsuperuser",
                    "  try:       curl -s -H 'X-Internal-Auth: "
                    f"{settings.INTERNAL_API_KEY}' -X POST {url}/sessions",
                    "",
                ]
            )
        )
