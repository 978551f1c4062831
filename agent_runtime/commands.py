"""What the maintenance commands share: the ``--for-real`` switch and how they list their rows."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.management.base import CommandParser, OutputWrapper

SHOWN = 20  # rows a command lists before it only counts the rest


def add_for_real(parser: CommandParser, what: str) -> None:
    parser.add_argument(
        "--for-real",
        action="store_true",
        help=f"{what} (without it: a dry run that only lists what it would do).",
    )


def list_rows(out: OutputWrapper, rows: Iterable[str], *, total: int, shown: int = SHOWN) -> None:
    """One line per row, at most ``shown`` of them, then how many more there are."""
    for n, row in enumerate(rows):
        if n == shown:
            break
        out.write(f"  {row}")
    if total > shown:
        out.write(f"  ... and {total - shown} more")


def duration_text(seconds: float) -> str:
    """A wait or an age, as a person reads it: "42 s", "17 min", "5 h 3 min", "3 days"."""
    total = int(seconds)
    if total < 120:
        return f"{total} s"
    if total < 2 * 3600:
        return f"{total // 60} min"
    if total < 2 * 86400:
        return f"{total // 3600} h {total % 3600 // 60} min"
    return f"{total // 86400} days"
