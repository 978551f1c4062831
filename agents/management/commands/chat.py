"""``manage.py chat``: talk to a running runtime from the terminal (agents.chat)."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.chat.client import Chat, ChatError, target_for
from agents.chat.terminal import Terminal
from agents.chat.workspace import ToolError, Workspace


class Command(BaseCommand):
    help = (
        "Chat with a running runtime; its tool calls run in --workspace, changes once you approve."
    )
    # A client: the server's configuration is not its business, and it never opens the database.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url",
            help="the runtime, e.g. http://127.0.0.1:8000 (default: the one `make run` starts, "
            "at $HOST:$PORT)",
        )
        parser.add_argument(
            "--session", metavar="ID", help="a session id to continue (created if new)"
        )
        parser.add_argument(
            "--agent", metavar="NAME", help="switch the session to this agent first"
        )
        parser.add_argument(
            "--workspace",
            metavar="DIR",
            default=".",
            help="the directory tool calls run in and may not leave (default: here)",
        )

    def handle(
        self,
        *args: Any,
        url: str | None,
        session: str | None,
        agent: str | None,
        workspace: str,
        **options: Any,
    ) -> None:
        try:
            chat = Chat(
                target=target_for(url, key=settings.INTERNAL_API_KEY),
                workspace=Workspace(workspace),
                terminal=Terminal(),
                session_id=session,
                agent=agent,
            )
            asyncio.run(_run(chat))
        except (ChatError, ToolError) as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:  # Ctrl-C before the chat took over its handling
            return


async def _run(chat: Chat) -> None:
    chat.terminal.start()
    await chat.run()
