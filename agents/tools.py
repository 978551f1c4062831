"""The tools offered to the LLM, as OpenAI ``tools`` entries (PROTOCOL §5).

Pure data: no Django imports, so the engine, the policy and the tests can all use it freely.
The JSON schemas double as the contract the policy validates arguments against.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from typing import Any

TOOL_NAMES: tuple[str, ...] = (
    "read_file",
    "write_file",
    "list_files",
    "create_directory",
    "execute_command",
    "search_in_code",
    "attempt_completion",
    "ask_followup_question",
    "switch_mode",
)
READ_ONLY_TOOLS = frozenset({"read_file", "list_files", "search_in_code"})
CONTROL_TOOLS = frozenset({"attempt_completion", "ask_followup_question"})
# Executed by the runtime itself, never sent to the IDE.
RUNTIME_TOOLS = frozenset({"switch_mode"})

# The arguments that name a place on the user's disk, and what each must name there: the policy
# normalises them, and judges them against an agent's file rules (agents.policy).
FILE, DIRECTORY, ANY = "file", "directory", "file or directory"
PATH_ARGUMENTS: dict[str, dict[str, str]] = {
    "read_file": {"path": FILE},
    "write_file": {"path": FILE},
    "list_files": {"path": DIRECTORY},
    "create_directory": {"path": DIRECTORY},
    "execute_command": {"cwd": DIRECTORY},
    "search_in_code": {"path": ANY},
}

# The agents switch_mode may hand off to. Kept literal (not imported from the registry, which
# imports this module); tests assert it equals registry.SPECIALISTS.
SWITCH_TARGETS: tuple[str, ...] = ("coder", "architect", "debug", "ask")


def _string(description: str, *, min_length: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": description}
    if min_length:
        schema["minLength"] = min_length
    return schema


def _integer(description: str, *, minimum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "description": description}
    if minimum is not None:
        schema["minimum"] = minimum
    return schema


def _boolean(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _tool(
    name: str, description: str, properties: dict[str, Any], required: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(required),
                "additionalProperties": False,
            },
        },
    }


_PATH = "Path of the file or directory, relative to the project root unless absolute."

TOOL_SPECS: dict[str, dict[str, Any]] = {
    "read_file": _tool(
        "read_file",
        "Read a text file from the user's project and return its content. "
        "Use start_line/end_line to read only part of a large file.",
        {
            "path": _string(_PATH, min_length=1),
            "encoding": _string("Text encoding of the file. Defaults to utf-8."),
            "start_line": _integer("First line to return (1-based, inclusive).", minimum=1),
            "end_line": _integer("Last line to return (1-based, inclusive).", minimum=1),
        },
        ("path",),
    ),
    "write_file": _tool(
        "write_file",
        "Create a file or replace its entire content. Always send the complete new content, "
        "not a diff or a fragment.",
        {
            "path": _string(_PATH, min_length=1),
            "content": _string("The complete content to write to the file."),
            "encoding": _string("Text encoding to write with. Defaults to utf-8."),
            "create_dirs": _boolean("Create missing parent directories. Defaults to true."),
            "backup": _boolean("Keep a backup copy of the file being replaced."),
        },
        ("path", "content"),
    ),
    "list_files": _tool(
        "list_files",
        "List the files and directories at a path in the user's project.",
        {
            "path": _string(_PATH + " Use '.' for the project root.", min_length=1),
            "recursive": _boolean("Also list the contents of subdirectories."),
            "include_hidden": _boolean("Include hidden entries (names starting with a dot)."),
            "pattern": _string("Only list names matching this glob pattern, e.g. '*.py'."),
        },
        ("path",),
    ),
    "create_directory": _tool(
        "create_directory",
        "Create a directory in the user's project.",
        {
            "path": _string(_PATH, min_length=1),
            "recursive": _boolean("Also create missing parent directories. Defaults to true."),
        },
        ("path",),
    ),
    "execute_command": _tool(
        "execute_command",
        "Run a command on the user's machine and return its exit code and output. "
        "Prefer short, non-interactive commands; explain what a command does before running "
        "anything that changes the system.",
        {
            "command": _string("The command line to run.", min_length=1),
            "cwd": _string("Working directory, relative to the project root unless absolute."),
            "timeout": _integer("Seconds to wait before the command is stopped.", minimum=1),
            "shell": _boolean("Run the command through the system shell."),
        },
        ("command",),
    ),
    "search_in_code": _tool(
        "search_in_code",
        "Search the project's files for text or a regular expression and return the matching "
        "lines with their file paths and line numbers.",
        {
            "query": _string("The text or regular expression to search for.", min_length=1),
            "path": _string("Directory or file to search in. Defaults to the project root."),
            "file_pattern": _string("Only search files whose names match this glob, e.g. '*.py'."),
            "case_sensitive": _boolean("Match case exactly. Defaults to false."),
            "regex": _boolean("Treat the query as a regular expression."),
            "max_results": _integer("Maximum number of matches to return.", minimum=1),
        },
        ("query",),
    ),
    "attempt_completion": _tool(
        "attempt_completion",
        "Finish the task: report the final result to the user. Call this once the request is "
        "fully done, with a concise summary of what was done and the outcome.",
        {"result": _string("The final result or summary for the user.", min_length=1)},
        ("result",),
    ),
    "ask_followup_question": _tool(
        "ask_followup_question",
        "Ask the user a question when the request is ambiguous or you need information only "
        "they have. Ask one clear, specific question.",
        {"question": _string("The question to ask the user.", min_length=1)},
        ("question",),
    ),
    "switch_mode": _tool(
        "switch_mode",
        "Hand the conversation to another specialist agent that is better suited to the "
        "request: coder (writes and changes code), architect (designs and documents), debug "
        "(investigates errors and failures), ask (answers questions without changing anything).",
        {
            "mode": {
                "type": "string",
                "enum": list(SWITCH_TARGETS),
                "description": "The agent to hand the conversation to.",
            },
            "reason": _string("Why the other agent is a better fit, in one sentence."),
        },
        ("mode",),
    ),
}


def tool_specs(names: Iterable[str]) -> list[dict[str, Any]]:
    """The OpenAI ``tools`` list for these tool names, in ``TOOL_NAMES`` order.

    Unknown names are ignored: the list offered to the model only ever holds real tools. The
    list is new, its specs are shared and refuse changes: they are built once per set of
    names (a deep copy per model call was 4 % of a loaded server's CPU).
    """
    return list(_specs_for(frozenset(names)))


class _Frozen(dict[str, Any]):
    """A spec handed out to every request: it encodes as JSON like any dict, and refuses to
    change, so one request cannot alter the tools of the next."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("tool specs are shared: copy one before changing it")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse  # type: ignore[assignment]

    # A copy is the caller's own, and may change.
    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {key: copy.deepcopy(value, memo) for key, value in self.items()}


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return _Frozen({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


@functools.cache
def _specs_for(wanted: frozenset[str]) -> tuple[dict[str, Any], ...]:
    return tuple(_frozen(TOOL_SPECS[name]) for name in TOOL_NAMES if name in wanted)
