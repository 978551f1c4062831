"""What a staff edit changes in a tool call's arguments, argument by argument.

Shown before an edit is released (the decision page's preview) and after (the decided
approval's pages). Short values are shown before → after as JSON, so that "make deploy" and
"make deploy " differ visibly; text with line breaks (a file's ``content``) as a line diff.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

# A line diff of two large files can run to thousands of lines; the page shows the head.
MAX_DIFF_LINES = 2000
CONTEXT_LINES = 3


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "hunk", "add", "remove", "context" or "note"
    text: str  # with its unified-diff sign ("+", "-", " "), so a copied diff stays one


@dataclass(frozen=True)
class ArgumentChange:
    name: str
    change: str  # "changed", "added" or "removed"
    before: str | None = None  # JSON; None when added, or when ``lines`` says it all
    after: str | None = None  # JSON; None when removed, or when ``lines`` says it all
    lines: tuple[DiffLine, ...] = field(default=())


@dataclass(frozen=True)
class ArgumentsDiff:
    changes: tuple[ArgumentChange, ...]
    unchanged: tuple[str, ...]

    @property
    def is_empty(self) -> bool:
        return not self.changes


def arguments_diff(original: Any, edited: Any) -> ArgumentsDiff:
    """The changes from the model's arguments to the edited ones, in the model's order."""
    if not isinstance(original, dict) or not isinstance(edited, dict):
        # Not objects (never stored by the runtime, but the columns are plain JSON).
        if original == edited:
            return ArgumentsDiff(changes=(), unchanged=())
        change = _change("arguments", original, edited)
        return ArgumentsDiff(changes=(change,), unchanged=())
    changes: list[ArgumentChange] = []
    unchanged: list[str] = []
    for name in [*original, *(n for n in edited if n not in original)]:
        if name in original and name in edited and original[name] == edited[name]:
            unchanged.append(name)
        else:
            changes.append(_change(name, original.get(name, _MISSING), edited.get(name, _MISSING)))
    return ArgumentsDiff(changes=tuple(changes), unchanged=tuple(unchanged))


_MISSING: Any = object()


def _change(name: str, before: Any, after: Any) -> ArgumentChange:
    kind = "added" if before is _MISSING else "removed" if after is _MISSING else "changed"
    old, new = _text(before), _text(after)
    if old is not None and new is not None and ("\n" in old or "\n" in new):
        return ArgumentChange(name=name, change=kind, lines=line_diff(old, new))
    return ArgumentChange(
        name=name,
        change=kind,
        before=None if before is _MISSING else _json(before),
        after=None if after is _MISSING else _json(after),
    )


def _text(value: Any) -> str | None:
    """The value as text for a line diff (a missing one is empty), or None if not text."""
    if value is _MISSING:
        return ""
    return value if isinstance(value, str) else None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def line_diff(before: str, after: str) -> tuple[DiffLine, ...]:
    """A unified diff of two texts (without its file header), as typed lines."""
    old, new = before.splitlines(), after.splitlines()
    lines: list[DiffLine] = []
    raw = difflib.unified_diff(old, new, lineterm="", n=CONTEXT_LINES)
    for text in raw:
        if text.startswith(("---", "+++")) and not lines:
            continue  # the file header: there are no file names to show
        kind = {"@": "hunk", "+": "add", "-": "remove"}.get(text[:1], "context")
        if len(lines) == MAX_DIFF_LINES:
            lines.append(
                DiffLine(
                    "note", f"… the diff goes on; only its first {len(lines)} lines are shown."
                )
            )
            break
        lines.append(DiffLine(kind, text))
    if not lines and before != after:
        # splitlines() hides these; a human must still see that the text is not the same.
        lines.append(DiffLine("note", "Only the line endings or the final newline differ."))
    return tuple(lines)
