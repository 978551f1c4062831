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
