"""``manage.py runtime_stats [--since 24h]``: sessions, turns, tokens, approvals, errors."""

from __future__ import annotations

import io
import json
import shutil
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from rich import box
from rich.columns import Columns
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from agent_runtime.commands import duration_text
from agent_runtime.stats import parse_since, runtime_stats


class Command(BaseCommand):
    help = "One screen of what the runtime did over a window: sessions, turns, tokens, approvals."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            default="24h",
            help="Window start: a duration back from now (90s, 30m, 24h, 7d, 2w) or an ISO "
            "date or date-time (UTC unless it names a zone). Default 24h.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="Print the figures as one JSON object.",
        )

    def handle(self, *args: Any, since: str, as_json: bool, **options: Any) -> None:
        now = timezone.now()
        try:
            start = parse_since(since, now=now)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        stats = runtime_stats(since=start, now=now)
        if as_json:
            self.stdout.write(json.dumps(stats, indent=2))
            return
        # Colours and the terminal's width on a terminal; plain text (no escape codes) otherwise.
        tty = self.stdout.isatty()
        buffer = io.StringIO()
        console = Console(
            file=buffer,
            force_terminal=tty,
            width=shutil.get_terminal_size().columns if tty else 100,
            no_color=not tty,
            highlight=False,
        )
        console.print(render(stats, label=since))
        self.stdout.write(buffer.getvalue(), ending="")


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE, show_header=False, min_width=40
    )
    table.add_column("what", style="cyan")
    table.add_column("n", justify="right")
    for label, value in rows:
        table.add_row(label, value)
    return table


def render(stats: dict[str, Any], *, label: str) -> Group:
    window = stats["window"]
    s, t, k, a, b = (
        stats["sessions"],
        stats["turns"],
        stats["tokens"],
        stats["approvals"],
        stats["breaker"],
    )
    heading = Text(
        f"agent-runtime, {window['since'][:19]}Z to {window['until'][:19]}Z (--since {label})",
        style="bold",
    )
    sessions = _table(
        "Sessions",
        [
            ("total (not deleted)", _n(s["total"])),
            ("active", _n(s["active"])),
            ("deleted, awaiting purge", _n(s["deleted"])),
            ("created in window", _n(s["created"])),
            ("with activity in window", _n(s["with_activity"])),
            ("turns running now", _n(s["turns_running"])),
        ],
    )
    average = t["average_model_call_ms"]
    turns = _table(
        "Turns and tokens",
        [
            ("turns started", _n(t["started"])),
            ("model calls", _n(t["model_calls"])),
            ("failed model calls", _n(t["failed_model_calls"])),
            ("average model call", "-" if average is None else f"{average:,} ms"),
            ("prompt tokens", _n(k["prompt"])),
            ("completion tokens", _n(k["completion"])),
            ("total tokens", _n(k["total"])),
        ],
    )
    approvals = _table(
        "Approvals created in window",
        [
            *((state, _n(n)) for state, n in a["by_state"].items()),
            ("pending now (all)", _n(a["pending_now"])),
            (
                "oldest pending",
                "-"
                if a["oldest_pending_seconds"] is None
                else duration_text(a["oldest_pending_seconds"]),
            ),
        ],
    )
    tools = _table(
        "Tool calls made in window",
        [(status, _n(n)) for status, n in stats["tool_calls"].items()] or [("none", "0")],
    )
    breaker = Text.assemble(
        ("LLM circuit breaker: ", "bold"),
        (b["state"], "red" if b["state"] != "closed" else "green"),
        f"; {_n(b['refused_calls'])} call(s) refused while open in window",
        f" (last {b['last_refusal'][:19]}Z)" if b["last_refusal"] else "",
        ". Each server process's live state: GET /health.",
    )
    errors = Table(title="Top errors in window", title_justify="left", box=box.SIMPLE)
    errors.add_column("count", justify="right")
    errors.add_column("kind", style="yellow")
    errors.add_column("last seen (UTC)")
    errors.add_column("message", overflow="fold")
    for entry in stats["top_errors"]:
        errors.add_row(_n(entry["count"]), entry["kind"], entry["last_seen"][:19], entry["message"])
    if not stats["top_errors"]:
        errors.add_row("0", "none", "-", "")
    return Group(
        heading,
        Columns([sessions, turns]),
        Columns([approvals, tools]),
        breaker,
        errors,
    )
