"""Tool policy: checked by the runtime before a tool call leaves it (PROTOCOL §5).

A refused call is never sent to the IDE; the model gets the refusal's reason as an error tool
result and takes another turn, so every reason is English addressed to the model.
``settings.TOOL_POLICY`` names the implementation (one small base class, ``import_string``).
"""

from __future__ import annotations

import functools
import json
import posixpath
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from agents.registry import AgentSpec, FileRule
from agents.tools import TOOL_SPECS

# Arguments naming a file-system location: checked for NUL bytes, which no real path holds
# and which some file APIs silently truncate at.
_PATH_ARGUMENTS = ("path", "cwd")


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
        for name in _PATH_ARGUMENTS:
            value = arguments.get(name)
            if isinstance(value, str) and "\x00" in value:
                return Refusal(f'The "{name}" argument of {tool_name} contains a NUL byte.')
        path = arguments.get("path")
        if isinstance(path, str):
            for rule in agent.file_rules:
                if tool_name in rule.tools and not path_matches(path, rule):
                    return Refusal(
                        f'The {agent.type} agent {rule.description}; "{path}" is not allowed.'
                    )
        return None

    def requires_approval(
        self, *, agent: AgentSpec, tool_name: str, arguments: dict[str, Any]
    ) -> bool:
        from django.conf import settings

        return tool_name in getattr(settings, "APPROVAL_REQUIRED_TOOLS", ())


def path_matches(path: str, rule: FileRule) -> bool:
    """Whether any of the rule's globs matches the path's basename or its whole path.

    Case-insensitive and with Windows separators and ``..`` normalised, so "docs\\README.MD"
    passes "*.md" and "docs/../src/app.py" cannot slip through "docs/*".
    """
    normalised = posixpath.normpath(path.replace("\\", "/")).lower()
    basename = posixpath.basename(normalised)
    for glob in rule.allowed_globs:
        pattern = glob.lower()
        if (basename and fnmatchcase(basename, pattern)) or fnmatchcase(normalised, pattern):
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
