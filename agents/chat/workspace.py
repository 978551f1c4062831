"""The IDE's side of the tools (agents.tools), executed in one directory and never outside it.

Every path is resolved against the workspace with its symlinks followed, and refused when the
result lies outside: ``..``, absolute paths elsewhere, and a symlink that points out all fail
the same way. A command is the exception no path check can confine (it may do anything the
user may), which is why the runtime holds it, like every write, for the user's approval.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import shlex
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MAX_RESULT_CHARS = 100_000  # what one tool result may carry back (the runtime cuts further)
MAX_READ_BYTES = 10 * 1024 * 1024
MAX_SEARCH_FILE_BYTES = 2 * 1024 * 1024
MAX_LISTED = 2000
DEFAULT_MAX_RESULTS = 100
DEFAULT_TIMEOUT = 120
MAX_TIMEOUT = 600


class ToolError(Exception):
    """The tool could not run: its text goes back as the tool result's ``error``."""


def clip(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"


def _arg(arguments: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = arguments.get(name, default)
    if value is None:
        if default is None:
            raise ToolError(f"missing argument {name!r}")
        return default
    # bool is an int: a flag must not pass as a line number, nor a number as a flag.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ToolError(f"argument {name!r} must be of type {kind.__name__}")
    return value


class Workspace:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        real = Path(os.path.realpath(root))
        if not real.is_dir():
            raise ToolError(f"the workspace {str(root)!r} is not a directory")
        self.root = real
        # New files get the permissions any other program would give them (mkstemp's are 0600).
        umask = os.umask(0)
        os.umask(umask)
        self.file_mode = 0o666 & ~umask
        self.tools: dict[str, Callable[[dict[str, Any]], str]] = {
            "read_file": self.read_file,
            "write_file": self.write_file,
            "list_files": self.list_files,
            "create_directory": self.create_directory,
            "search_in_code": self.search_in_code,
        }

    # --- paths -----------------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """The real path ``path`` names in the workspace; ToolError if it lies outside."""
        if not path or "\x00" in path:
            raise ToolError(f"not a usable path: {path!r}")
        candidate = Path(path)
        real = Path(os.path.realpath(candidate if candidate.is_absolute() else self.root / path))
        if real != self.root and self.root not in real.parents:
            raise ToolError(f"{path!r} is outside the workspace ({self.root})")
        return real

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() or "."

    def _inside(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return real == self.root or self.root in real.parents

    # --- running a call --------------------------------------------------------------------

    async def run(self, tool_name: str, arguments: dict[str, Any]) -> str:
        """Execute one call; returns the result text, raises ToolError for the error text.

        File tools run in a thread (a search of a big tree takes a while); a command runs as
        its own process group, killed if this coroutine is cancelled (Ctrl-C)."""
        if tool_name == "execute_command":
            return await self.execute_command(arguments)
        tool = self.tools.get(tool_name)
        if tool is None:
            raise ToolError(f"this client cannot run the tool {tool_name!r}")
        try:
            return await asyncio.to_thread(tool, arguments)
        except OSError as exc:
            raise ToolError(f"{tool_name} failed: {exc.strerror or exc}") from None

    def read_file(self, arguments: dict[str, Any]) -> str:
        path = self.resolve(_arg(arguments, "path", str))
        encoding = _arg(arguments, "encoding", str, "utf-8")
        start = _arg(arguments, "start_line", int, 1)
        end = arguments.get("end_line")
        if end is not None:
            end = _arg(arguments, "end_line", int)
        if not path.is_file():
            raise ToolError(f"no such file: {self.relative(path)}")
        if path.stat().st_size > MAX_READ_BYTES:
            raise ToolError(
                f"{self.relative(path)} is larger than {MAX_READ_BYTES} bytes: "
                "read it in parts with start_line and end_line"
            )
        data = path.read_bytes()
        if b"\x00" in data[:8192]:
            raise ToolError(f"{self.relative(path)} is a binary file")
        try:
            text = data.decode(encoding)
        except (LookupError, UnicodeDecodeError) as exc:
            raise ToolError(f"cannot decode {self.relative(path)} as {encoding}: {exc}") from None
        if start != 1 or end is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[start - 1 : end])
        return clip(text)

    def write_file(self, arguments: dict[str, Any]) -> str:
        path = self.resolve(_arg(arguments, "path", str))
        content = _arg(arguments, "content", str)
        encoding = _arg(arguments, "encoding", str, "utf-8")
        create_dirs = _arg(arguments, "create_dirs", bool, True)
        backup = _arg(arguments, "backup", bool, False)
        if path.is_dir():
            raise ToolError(f"{self.relative(path)} is a directory")
        try:
            data = content.encode(encoding)
        except (LookupError, UnicodeEncodeError) as exc:
            raise ToolError(f"cannot encode the content as {encoding}: {exc}") from None
        if not path.parent.is_dir():
            if not create_dirs:
                raise ToolError(f"no such directory: {self.relative(path.parent)}")
            path.parent.mkdir(parents=True, exist_ok=True)
        note = ""
        if backup and path.exists():
            saved = path.with_name(path.name + ".bak")
            shutil.copy2(path, saved)
            note = f" (the old content is in {self.relative(saved)})"
        # Written beside it, then renamed over it: the file is either old or new, never half.
        mode = path.stat().st_mode & 0o7777 if path.exists() else self.file_mode
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return f"Wrote {len(content)} characters to {self.relative(path)}{note}."

    def list_files(self, arguments: dict[str, Any]) -> str:
        path = self.resolve(_arg(arguments, "path", str, "."))
        recursive = _arg(arguments, "recursive", bool, False)
        hidden = _arg(arguments, "include_hidden", bool, False)
        pattern = _arg(arguments, "pattern", str, "")
        if not path.is_dir():
            raise ToolError(f"no such directory: {self.relative(path)}")
        entries: list[str] = []
        for entry, is_dir in self._walk(path, recursive=recursive, hidden=hidden):
            if pattern and not fnmatch.fnmatch(entry.name, pattern):
                continue
            entries.append(self.relative(entry) + ("/" if is_dir else ""))
            if len(entries) > MAX_LISTED:
                break
        if not entries:
            return f"{self.relative(path)} holds no matching entries."
        listed = "\n".join(entries[:MAX_LISTED])
        if len(entries) > MAX_LISTED:
            listed += f"\n[... more than {MAX_LISTED} entries; list a subdirectory]"
        return clip(listed)

    def _walk(self, top: Path, *, recursive: bool, hidden: bool) -> Iterator[tuple[Path, bool]]:
        """Entries under ``top`` in name order, depth first; symlinks are listed, not
        followed (a linked directory may lead out of the workspace)."""
        try:
            children = sorted(os.scandir(top), key=lambda e: e.name)
        except OSError:
            return
        for child in children:
            if not hidden and child.name.startswith("."):
                continue
            is_dir = child.is_dir(follow_symlinks=False)
            yield Path(child.path), is_dir
            if recursive and is_dir:
                yield from self._walk(Path(child.path), recursive=True, hidden=hidden)

    def create_directory(self, arguments: dict[str, Any]) -> str:
        path = self.resolve(_arg(arguments, "path", str))
        recursive = _arg(arguments, "recursive", bool, True)
        if path.is_dir():
            return f"{self.relative(path)} already exists."
        if path.exists():
            raise ToolError(f"{self.relative(path)} exists and is not a directory")
        if not recursive and not path.parent.is_dir():
            raise ToolError(f"no such directory: {self.relative(path.parent)}")
        path.mkdir(parents=recursive)
        return f"Created the directory {self.relative(path)}."

    def search_in_code(self, arguments: dict[str, Any]) -> str:
        query = _arg(arguments, "query", str)
        top = self.resolve(_arg(arguments, "path", str, "."))
        file_pattern = _arg(arguments, "file_pattern", str, "")
        case_sensitive = _arg(arguments, "case_sensitive", bool, False)
        regex = _arg(arguments, "regex", bool, False)
        limit = min(_arg(arguments, "max_results", int, DEFAULT_MAX_RESULTS), 1000)
        try:
            matcher = re.compile(
                query if regex else re.escape(query), 0 if case_sensitive else re.IGNORECASE
            )
        except re.error as exc:
            raise ToolError(f"invalid regular expression: {exc}") from None
        if top.is_file():
            files: Iterator[tuple[Path, bool]] = iter([(top, False)])
        elif top.is_dir():
            files = self._walk(top, recursive=True, hidden=False)
        else:
            raise ToolError(f"no such file or directory: {self.relative(top)}")
        found: list[str] = []
        for path, is_dir in files:
            if is_dir or (file_pattern and not fnmatch.fnmatch(path.name, file_pattern)):
                continue
            for number, line in self._lines(path):
                if matcher.search(line):
                    found.append(f"{self.relative(path)}:{number}: {line.strip()[:300]}")
                    if len(found) >= limit:
                        return clip("\n".join(found) + f"\n[stopped at {limit} matches]")
        return clip("\n".join(found)) if found else f"No matches for {query!r}."

    def _lines(self, path: Path) -> Iterator[tuple[int, str]]:
        """A text file's lines; nothing for a binary, huge, unreadable or outside file."""
        if not self._inside(path) or not path.is_file():
            return
        try:
            if path.stat().st_size > MAX_SEARCH_FILE_BYTES:
                return
            data = path.read_bytes()
        except OSError:
            return
        if b"\x00" in data[:8192]:
            return
        yield from enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1)

    async def execute_command(self, arguments: dict[str, Any]) -> str:
        command = _arg(arguments, "command", str)
        cwd = self.resolve(_arg(arguments, "cwd", str, "."))
        timeout = min(_arg(arguments, "timeout", int, DEFAULT_TIMEOUT), MAX_TIMEOUT)
        shell = _arg(arguments, "shell", bool, True)
        if not cwd.is_dir():
            raise ToolError(f"no such directory: {self.relative(cwd)}")
        pipes: dict[str, Any] = {
            "cwd": cwd,
            "stdin": asyncio.subprocess.DEVNULL,
            "stdout": asyncio.subprocess.PIPE,
            "stderr": asyncio.subprocess.PIPE,
            # Its own process group: the terminal's Ctrl-C reaches this client, which decides
            # (and kills the whole group), not the command directly.
            "start_new_session": True,
        }
        try:
            if shell:
                # The user approved this exact command line at the prompt.
                process = await asyncio.create_subprocess_shell(command, **pipes)  # noqa: S604
            else:
                process = await asyncio.create_subprocess_exec(*shlex.split(command), **pipes)
        except (OSError, ValueError) as exc:
            raise ToolError(f"cannot start {command!r}: {exc}") from None
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            _kill_group(process)
            await process.wait()
            raise ToolError(
                f"{command!r} did not finish within {timeout} s and was stopped"
            ) from None
        except asyncio.CancelledError:
            _kill_group(process)
            raise
        parts = [f"Exit code: {process.returncode}"]
        for name, data in (("stdout", stdout), ("stderr", stderr)):
            if data:
                parts.append(f"--- {name} ---\n{data.decode('utf-8', errors='replace')}")
        return clip("\n".join(parts))


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
