"""``manage.py export_session ID``: a session's transcript (Markdown) or full record (JSON)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agent_runtime.transcript import (
    SessionNotFound,
    export_session_get,
    write_json,
    write_markdown,
)


class Command(BaseCommand):
    help = "Export one session as a readable Markdown transcript or its complete JSON record."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session_id", metavar="ID", help="The session's id.")
        parser.add_argument(
            "--format",
            choices=["markdown", "json"],
            default="markdown",
            help="markdown (for people, the default) or json (every stored field, for tools).",
        )
        parser.add_argument(
            "--output",
            metavar="FILE",
            help="Write to FILE (replaced only once the export is complete) instead of stdout.",
        )

    def handle(
        self, *args: Any, session_id: str, format: str, output: str | None, **options: Any
    ) -> None:
        try:
            session = export_session_get(session_id=session_id)
        except SessionNotFound as exc:
            raise CommandError(str(exc)) from None
        writer = write_json if format == "json" else write_markdown
        if output is None:
            writer(session, lambda text: self.stdout.write(text, ending=""))
            return
        target = Path(output)
        # A temporary file beside the target, renamed into place: never a half-written export.
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                writer(session, file.write)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.stdout.write(f"exported session {session.pk} ({format}) to {target}")
