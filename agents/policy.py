"""Tool policy: checked by the runtime before a tool call leaves it (PROTOCOL §5).

A refused call is never sent to the IDE; the model gets the refusal's reason as an error tool
result and takes another turn, so every reason is English addressed to the model.
``settings.TOOL_POLICY`` names the implementation (one small base class, ``import_string``).
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
import unicodedata
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from agents.registry import AgentSpec, FileRule
from agents.tools import ANY, FILE, PATH_ARGUMENTS, TOOL_SPECS


@dataclass(frozen=True)
class Refusal:
    reason: str


class InvalidArguments(ValueError):
    pass


class ToolPolicy:
    """Base class for ``settings.TOOL_POLICY``: allows everything and asks for no approval."""

    def check(
        self, *, agent: AgentSpec, tool_name: str, arguments: dict[str, Any]
    ) -> Refusal | None:
        return None

    def requires_approval(
        self, *, agent: AgentSpec, tool_name: str, arguments: dict[str, Any]
    ) -> bool:
        return False


class DefaultToolPolicy(ToolPolicy):
    """The agent's tool set, the tool's schema, then the agent's file rules."""

    def check(
        self, *, agent: AgentSpec, tool_name: str, arguments: dict[str, Any]
    ) -> Refusal | None:
        allowed = ", ".join(agent.allowed_tools) or "none"
        if tool_name not in TOOL_SPECS:
            return Refusal(f'Unknown tool "{tool_name}". Your tools: {allowed}.')
        if not agent.allows_tool(tool_name):
            return Refusal(
                f"The {agent.type} agent may not use {tool_name}. Allowed tools: {allowed}."
            )
        problems = validate_arguments(tool_name, arguments)
        if problems:
            return Refusal(f"Invalid arguments for {tool_name}: {'; '.join(problems)}.")
        paths: dict[str, str] = {}
        for name in PATH_ARGUMENTS.get(tool_name, {}):
            value = arguments.get(name)
            if not isinstance(value, str):
                continue
            # No real path holds one, and some file APIs silently cut the path at it.
            if "\x00" in value:
                return Refusal(f'The "{name}" argument of {tool_name} contains a NUL byte.')
            paths[name] = value
        rules = [rule for rule in agent.file_rules if tool_name in rule.tools]
        if rules:
            return _check_file_rules(
                agent=agent, tool_name=tool_name, paths=paths, rules=rules, root=workspace_root()
            )
        return None

    def requires_approval(
        self, *, agent: AgentSpec, tool_name: str, arguments: dict[str, Any]
    ) -> bool:
        from django.conf import settings

        return tool_name in getattr(settings, "APPROVAL_REQUIRED_TOOLS", ())


def _check_file_rules(
    *,
    agent: AgentSpec,
    tool_name: str,
    paths: dict[str, str],
    rules: list[FileRule],
    root: str | None,
) -> Refusal | None:
    """Every path argument, read as both a Windows and a POSIX IDE would, against every rule.

    The runtime does not know the IDE's system, and the two disagree about "\\" (a separator,
    or a character of a name): "src\\..\\docs\\a.py" is docs/a.py on one and a file named
    that at the root on the other. So a path passes only if both readings are inside the
    workspace and both pass the rule.
    """
    kinds = PATH_ARGUMENTS[tool_name]
    for name, value in paths.items():
        shown = f'"{value}"' if name == "path" else f'the {name} "{value}"'
        for windows in (True, False):
            try:
                relative = workspace_path(value, root=root, windows=windows, names=kinds[name])
            except PathRefused as exc:
                return Refusal(
                    f"The {agent.type} agent {rules[0].description}; {shown} is not allowed: "
                    f"it {exc}. Name the {kinds[name]} by its path inside the project, "
                    'relative to the project root (such as "docs/notes.md").'
                )
            for rule in rules:
                if not path_matches(relative, rule):
                    return Refusal(
                        f"The {agent.type} agent {rule.description}; {shown} is not allowed."
                    )
    return None


class PathRefused(ValueError):
    """Why a path argument cannot be judged; the text completes "it ..." in a refusal."""


# Windows opens these as devices in every directory and whatever the extension follows:
# "aux.md" passes "*.md" but writes no file.
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{kind}{n}" for kind in ("com", "lpt") for n in "123456789\u00b9\u00b2\u00b3"}
)
_DRIVE = re.compile(r"[A-Za-z]:")


def workspace_path(raw: str, *, root: str | None, windows: bool, names: str = ANY) -> str:
    """The path the IDE would touch, normalised and relative to the workspace root.

    ``windows`` reads "\\" as a separator and a leading "C:" as a drive, and adds what only
    Windows does to names; ``root`` is ``workspace_root()``. Raises ``PathRefused`` for
    anything a rule could misjudge: control and invisible characters, "~", a climb out with
    "..", an absolute path with no root configured or outside it, and on Windows ":"
    (alternate data streams, "C:x"), UNC and device paths, names ending in a dot or a space
    (Windows drops them) and device names. ``names=FILE`` also refuses a path ending like a
    directory ("x.md/").
    """
    path = raw.replace("\\", "/") if windows else raw
    for ch in path:
        # Format characters include the bidirectional overrides: "x\u202edm.py" is x<RLO>dm.py
        # but shows as "xyp.md" to the person approving it.
        if unicodedata.category(ch) in ("Cc", "Cf"):
            raise PathRefused(f"contains an invisible or control character (U+{ord(ch):04X})")
    if path.startswith("~"):
        raise PathRefused('starts with "~", which a shell expands to a home directory')
    drive = ""
    if windows:
        if path.startswith("//"):
            raise PathRefused("names a network share or a device (\\\\server\\...)")
        if _DRIVE.match(path):
            drive, path = path[:2].lower(), path[2:]
            if not path.startswith("/"):
                raise PathRefused(
                    f"is relative to the current directory of drive {drive.upper()}, "
                    "which may be anywhere"
                )
        if ":" in path:
            raise PathRefused(
                'contains ":", which on Windows names an alternate data stream of another '
                'file ("x.py:.md" writes into x.py)'
            )
    if names == FILE and path.rsplit("/", 1)[-1] in ("", ".", ".."):
        raise PathRefused("ends like a directory, not a file")
    if path.startswith("/"):
        # POSIX leaves "//x" to the system; Linux and macOS read it as "/x".
        absolute = drive + posixpath.normpath("/" + path.lstrip("/"))
        if root is None:
            raise PathRefused("is an absolute path")
        inside = root if root.endswith("/") else root + "/"
        if absolute == root:
            relative = "."
        elif absolute.startswith(inside):
            relative = absolute[len(inside) :]
        else:
            raise PathRefused(f"is outside the workspace ({root})")
    else:
        relative = posixpath.normpath(path)
        if relative == ".." or relative.startswith("../"):
            raise PathRefused('climbs out of the workspace with ".."')
    if windows:
        for name in relative.split("/"):
            if name != "." and name.endswith((".", " ")):
                raise PathRefused(
                    f'has a name ending in a dot or a space ("{name}"), which Windows drops'
                )
            if name.split(".")[0].rstrip(" ").lower() in _WINDOWS_DEVICES:
                raise PathRefused(f'uses "{name}", which Windows opens as a device, not a file')
    return relative


def normalise_root(root: str) -> str | None:
    """``WORKSPACE_ROOT`` in the form ``workspace_path`` compares with; None if not absolute.

    Compared case-sensitively (but the drive letter): on a case-sensitive disk "/Work" is
    another directory than "/work", and refusing a differently-cased path costs nothing.
    """
    path = root.strip().replace("\\", "/")
    drive = ""
    if _DRIVE.match(path):
        drive, path = path[:2].lower(), path[2:]
    if not path.startswith("/"):
        return None
    return drive + posixpath.normpath("/" + path.lstrip("/"))


def workspace_root() -> str | None:
    """``settings.WORKSPACE_ROOT`` normalised, or None when unset (relative paths only)."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    raw = getattr(settings, "WORKSPACE_ROOT", "") or ""
    if not raw.strip():
        return None
    root = normalise_root(raw)
    if root is None:
        raise ImproperlyConfigured(f"WORKSPACE_ROOT must be an absolute path, not {raw!r}.")
    return root


def path_matches(relative: str, rule: FileRule) -> bool:
    """Whether any of the rule's globs matches the path's basename or its whole path.

    ``relative`` comes from ``workspace_path``. Case-insensitive, so "docs/README.MD" passes
    "*.md" (Windows and macOS disks ignore case, and a rule should not depend on it).
    """
    lowered = relative.lower()
    basename = posixpath.basename(lowered)
    for glob in rule.allowed_globs:
        pattern = glob.lower()
        if (basename and fnmatchcase(basename, pattern)) or fnmatchcase(lowered, pattern):
            return True
    return False


_JSON_TYPES: dict[str, tuple[str, Any]] = {
    "string": ("a string", lambda v: isinstance(v, str)),
    # bool is a subclass of int in Python, but true is not an integer in JSON.
    "integer": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "boolean": ("a boolean (true or false)", lambda v: isinstance(v, bool)),
}


def validate_arguments(tool_name: str, arguments: dict[str, Any]) -> list[str]:
    """Problems with the arguments against the tool's JSON schema, as English fragments.

    Covers what models actually get wrong: missing or unexpected keys, basic types, enums,
    ``minimum`` and ``minLength``. A ``null`` optional argument counts as omitted.
    """
    schema = TOOL_SPECS[tool_name]["function"]["parameters"]
    properties: dict[str, dict[str, Any]] = schema["properties"]
    problems: list[str] = []
    if not isinstance(arguments, dict):
        return ["the arguments must be a JSON object"]
    for name in schema["required"]:
        if arguments.get(name) is None:
            problems.append(f'missing required argument "{name}"')
    unexpected = [name for name in arguments if name not in properties]
    if unexpected:
        problems.append(
            f"unexpected argument(s) {', '.join(repr(n) for n in unexpected)}; "
            f"accepted: {', '.join(properties)}"
        )
    for name, prop in properties.items():
        value = arguments.get(name)
        if value is None:
            continue
        label, is_type = _JSON_TYPES[prop["type"]]
        if not is_type(value):
            problems.append(f'"{name}" must be {label}')
        elif "enum" in prop and value not in prop["enum"]:
            problems.append(f'"{name}" must be one of: {", ".join(prop["enum"])}')
        elif "minimum" in prop and value < prop["minimum"]:
            problems.append(f'"{name}" must be at least {prop["minimum"]}')
        elif "minLength" in prop and len(value.strip()) < prop["minLength"]:
            problems.append(f'"{name}" must not be empty')
    return problems


def parse_arguments(raw: str | None) -> dict[str, Any]:
    """Decode the model's JSON arguments string; an empty string means no arguments."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        detail = f": {exc}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidArguments(
            f"The tool arguments are not valid JSON{detail}. Send them as one JSON object."
        ) from exc
    if not isinstance(value, dict):
        raise InvalidArguments(
            f"The tool arguments must be a JSON object, not {_json_kind(value)}."
        )
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


@functools.lru_cache(maxsize=4)
def _load_policy(dotted_path: str) -> ToolPolicy:
    from django.core.exceptions import ImproperlyConfigured
    from django.utils.module_loading import import_string

    policy = import_string(dotted_path)()
    if not isinstance(policy, ToolPolicy):
        raise ImproperlyConfigured(f"TOOL_POLICY {dotted_path!r} is not a ToolPolicy subclass.")
    return policy


def get_policy() -> ToolPolicy:
    """The configured policy instance, cached per ``settings.TOOL_POLICY`` value."""
    from django.conf import settings

    return _load_policy(getattr(settings, "TOOL_POLICY", "agents.policy.DefaultToolPolicy"))
