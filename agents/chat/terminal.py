"""What the chat draws and reads: rich for output, prompt-toolkit for input.

On a terminal: colours, a spinner while the model thinks, a prompt with history (kept in
``$XDG_STATE_HOME/agent-runtime/chat_history``). When stdin or stdout is not a terminal (a
script, a test, a pipe): plain text, no spinner, and input read line by line, each line echoed
after its prompt so the output reads as a transcript.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from rich.console import Console
from rich.panel import Panel
from rich.status import Status
from rich.text import Text

PREVIEW_LINES = 200  # of a file's content in an approval; [e]dit shows all of it


class CtrlC(Exception):  # noqa: N818 (named after the key)
    """Ctrl-C typed at a terminal prompt (where the terminal is raw and sends no SIGINT).

    Not KeyboardInterrupt: escaping a task, that one stops the whole event loop."""


def _history() -> History:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    folder = Path(state) / "agent-runtime"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "chat_history"
        path.touch()
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


class Terminal:
    def __init__(
        self,
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.stdin = stdin or sys.stdin
        out = stdout or sys.stdout
        if interactive is None:
            interactive = self.stdin.isatty() and out.isatty()
        self.interactive = interactive
        # soft_wrap everywhere: streamed text must not be cut into lines at a guessed width.
        self.console = Console(file=out, highlight=False, soft_wrap=True)
        self.mid_line = False  # streamed text left the cursor inside a line
        self.status: Status | None = None
        self.prompt: PromptSession[str] | None = None
        self.lines: asyncio.Queue[str | None] | None = None
        # What was typed at a prompt a server frame interrupted, by the prompt's label.
        self.drafts: dict[str, str] = {}

    # --- input -----------------------------------------------------------------------------

    def start(self) -> None:
        if self.interactive:
            self.prompt = PromptSession(history=_history())
            return
        # A daemon thread, so a read still waiting on a quiet pipe never holds up the exit.
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.lines = lines

        def read() -> None:
            for line in self.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\r\n"))
            loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=read, name="chat-stdin", daemon=True).start()

    async def ask(self, label: str, *, default: str = "", multiline: bool = False) -> str:
        """One answer. EOFError: end of input (Ctrl-D); CtrlC: Ctrl-C typed at a terminal
        prompt (elsewhere Ctrl-C is a signal, handled by the client)."""
        self.stop_thinking()
        self.end_line()
        if self.prompt is not None:
            draft = self.drafts.pop(label, "")
            try:
                return await self.prompt.prompt_async(
                    [("bold", f"{label}> ")],
                    default=default or draft,
                    multiline=multiline,
                    handle_sigint=False,  # the client's own SIGINT handler stays in place
                )
            except KeyboardInterrupt:
                raise CtrlC from None
            except asyncio.CancelledError:
                self.drafts[label] = self.prompt.default_buffer.text
                raise
        assert self.lines is not None
        self.console.print(f"{label}> ", end="", markup=False)
        self.mid_line = True  # until the answer is echoed (a frame may interrupt the wait)
        line = await self.lines.get()
        self.mid_line = False
        if line is None:
            self.lines.put_nowait(None)  # every later question sees the end of input too
            self.console.print()
            raise EOFError
        self.console.print(line, markup=False)
        return line

    # --- output ----------------------------------------------------------------------------

    def thinking(self, what: str = "thinking") -> None:
        """A spinner until the next output (terminals only: it draws nothing elsewhere)."""
        if not self.interactive or self.status is not None:
            return
        self.end_line()
        self.status = self.console.status(f"[dim]{what}…[/]", spinner="dots")
        self.status.start()

    def stop_thinking(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def token(self, text: str, *, agent: str | None = None) -> None:
        self.stop_thinking()
        if not self.mid_line:
            # A new line (or one a note broke, as Ctrl-C's does) starts at the text itself.
            text = text.lstrip()
            if not text:
                return
        if not self.mid_line and agent:
            self.console.print(Text(f"{agent}: ", style="bold cyan"), end="")
        self.console.print(Text(text), end="")
        self.mid_line = not text.endswith("\n")

    def end_line(self) -> None:
        if self.mid_line:
            self.console.print()
            self.mid_line = False

    def note(self, text: str, style: str = "dim") -> None:
        self.stop_thinking()
        self.end_line()
        self.console.print(Text(text, style=style))

    def error(self, text: str) -> None:
        self.note(f"error: {text}", "bold red")

    def call(self, tool_name: str, arguments: dict[str, Any], *, prefix: str = "→") -> None:
        """A tool call in one line (long values shortened)."""
        shown = ", ".join(f"{k}={_short(v)}" for k, v in arguments.items())
        self.note(f"{prefix} {tool_name}({shown})", "yellow")

    def approval(self, tool_name: str, arguments: dict[str, Any]) -> None:
        """A call held for approval, every argument (a long file's first lines): the user
        decides on what will really run."""
        self.stop_thinking()
        self.end_line()
        body = Text()
        for key, value in arguments.items():
            if key == "content" and isinstance(value, str):
                continue
            body.append(f"{key}: ", style="bold")
            body.append(value if isinstance(value, str) else json.dumps(value))
            body.append("\n")
        content = arguments.get("content")
        if isinstance(content, str):
            lines = content.splitlines()
            body.append("content:\n", style="bold")
            body.append("\n".join(lines[:PREVIEW_LINES]) + "\n")
            if len(lines) > PREVIEW_LINES:
                body.append(
                    f"[... {len(lines) - PREVIEW_LINES} more lines: e shows them all]\n",
                    style="dim",
                )
        body.rstrip()
        title = f"{tool_name} waits for your approval"
        self.console.print(Panel(body if body.plain else Text("(no arguments)"), title=title))


def _short(value: Any, limit: int = 60) -> str:
    if not isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value[:limit] + "…" if len(value) > limit else value, ensure_ascii=False)
