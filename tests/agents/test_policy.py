from __future__ import annotations

from typing import Any

import pytest

from agents.policy import (
    DefaultToolPolicy,
    InvalidArguments,
    Refusal,
    ToolPolicy,
    _load_policy,
    get_policy,
    parse_arguments,
)
from agents.registry import AGENTS

policy = DefaultToolPolicy()


def check(agent: str, tool: str, **arguments: Any) -> Refusal | None:
    return policy.check(agent=AGENTS[agent], tool_name=tool, arguments=arguments)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("read_file", {"path": "src/app.py", "start_line": 1, "end_line": 20}),
        ("write_file", {"path": "src/app.py", "content": "", "create_dirs": True}),
        ("list_files", {"path": ".", "recursive": False, "pattern": "*.py"}),
        ("create_directory", {"path": "src/new", "recursive": True}),
        ("execute_command", {"command": "pytest -q", "cwd": ".", "timeout": 60, "shell": True}),
        ("search_in_code", {"query": "def main", "regex": False, "max_results": 10}),
        ("attempt_completion", {"result": "Done."}),
        ("ask_followup_question", {"question": "Which file?"}),
        ("switch_mode", {"mode": "debug", "reason": "It is a crash."}),
    ],
)
def test_it_allows_well_formed_calls_for_the_coder(tool: str, arguments: dict[str, Any]) -> None:
    assert check("coder", tool, **arguments) is None


@pytest.mark.parametrize(
    ("agent", "tool", "arguments"),
    [
        ("architect", "execute_command", {"command": "ls"}),
        ("architect", "create_directory", {"path": "docs"}),
        ("debug", "write_file", {"path": "notes.md", "content": "x"}),
        ("debug", "create_directory", {"path": "tmp"}),
        ("ask", "write_file", {"path": "a.md", "content": "x"}),
        ("ask", "execute_command", {"command": "ls"}),
        ("orchestrator", "read_file", {"path": "a.py"}),
        ("universal", "switch_mode", {"mode": "coder"}),
    ],
)
def test_it_refuses_tools_the_agent_may_not_use(
    agent: str, tool: str, arguments: dict[str, Any]
) -> None:
    refusal = check(agent, tool, **arguments)
    assert refusal is not None
    assert refusal.reason.startswith(f"The {agent} agent may not use {tool}. Allowed tools: ")


def test_it_lists_the_allowed_tools_in_the_refusal() -> None:
    refusal = check("architect", "execute_command", command="ls")
    assert refusal == Refusal(
        "The architect agent may not use execute_command. Allowed tools: read_file, "
        "write_file, list_files, search_in_code, attempt_completion, ask_followup_question, "
        "switch_mode."
    )


def test_it_refuses_unknown_tools() -> None:
    refusal = check("coder", "delete_everything")
    assert refusal is not None
    assert refusal.reason.startswith('Unknown tool "delete_everything". Your tools: read_file')


@pytest.mark.parametrize(
    "path", ["README.md", "docs/README.MD", "docs/design/plan.md", "docs\\adr\\0001.Md"]
)
def test_it_lets_the_architect_write_markdown(path: str) -> None:
    assert check("architect", "write_file", path=path, content="# Plan") is None


@pytest.mark.parametrize(
    "path", ["src/app.py", "README.md.py", "notes.markdown", "docs/../src/app.py", "md"]
)
def test_it_refuses_the_architect_other_files(path: str) -> None:
    refusal = check("architect", "write_file", path=path, content="x")
    assert refusal == Refusal(
        f'The architect agent may only write Markdown files (*.md); "{path}" is not allowed.'
    )


def test_it_applies_file_rules_only_to_the_tools_they_name() -> None:
    assert check("architect", "read_file", path="src/app.py") is None
    assert check("architect", "list_files", path="src") is None


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("write_file", {"path": "a.py"}, 'missing required argument "content"'),
        ("read_file", {}, 'missing required argument "path"'),
        ("read_file", {"path": None}, 'missing required argument "path"'),
        ("read_file", {"path": 3}, '"path" must be a string'),
        ("read_file", {"path": "a", "start_line": "1"}, '"start_line" must be an integer'),
        ("read_file", {"path": "a", "start_line": True}, '"start_line" must be an integer'),
        ("read_file", {"path": "a", "start_line": 1.5}, '"start_line" must be an integer'),
        ("read_file", {"path": "a", "start_line": 0}, '"start_line" must be at least 1'),
        ("read_file", {"path": "  "}, '"path" must not be empty'),
        ("write_file", {"path": "a", "content": "", "backup": "yes"}, '"backup" must be a bool'),
        ("execute_command", {"command": ["ls"]}, '"command" must be a string'),
        ("list_files", {"path": ".", "recurse": True}, "unexpected argument(s) 'recurse'"),
        ("switch_mode", {"mode": "orchestrator"}, '"mode" must be one of: coder, architect'),
    ],
)
def test_it_refuses_invalid_arguments(tool: str, arguments: dict[str, Any], expected: str) -> None:
    refusal = check("coder", tool, **arguments)
    assert refusal is not None
    assert refusal.reason.startswith(f"Invalid arguments for {tool}: ")
    assert expected in refusal.reason


def test_it_reports_every_argument_problem_at_once() -> None:
    refusal = check("coder", "write_file", backup=1)
    assert refusal is not None
    assert 'missing required argument "path"' in refusal.reason
    assert 'missing required argument "content"' in refusal.reason
    assert '"backup" must be a boolean' in refusal.reason


def test_it_treats_null_optional_arguments_as_omitted() -> None:
    assert check("coder", "read_file", path="a.py", encoding=None, start_line=None) is None


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("read_file", {"path": "a.py\x00.md"}),
        ("execute_command", {"command": "ls", "cwd": "src\x00"}),
    ],
)
def test_it_refuses_paths_with_nul_bytes(tool: str, arguments: dict[str, Any]) -> None:
    refusal = check("coder", tool, **arguments)
    assert refusal is not None
    assert "NUL byte" in refusal.reason


def test_it_checks_the_nul_byte_before_the_file_rule() -> None:
    refusal = check("architect", "write_file", path="notes.md\x00", content="x")
    assert refusal is not None
    assert "NUL byte" in refusal.reason


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        ("write_file", True),
        ("create_directory", True),
        ("execute_command", True),
        ("read_file", False),
        ("list_files", False),
        ("search_in_code", False),
        ("attempt_completion", False),
        ("switch_mode", False),
    ],
)
def test_it_requires_approval_for_the_default_tools(settings, tool: str, expected: bool) -> None:
    settings.APPROVAL_REQUIRED_TOOLS = ["write_file", "create_directory", "execute_command"]
    assert policy.requires_approval(agent=AGENTS["coder"], tool_name=tool, arguments={}) is expected


def test_it_follows_the_approval_setting(settings) -> None:
    settings.APPROVAL_REQUIRED_TOOLS = ["read_file"]
    agent = AGENTS["coder"]
    assert policy.requires_approval(agent=agent, tool_name="read_file", arguments={})
    assert not policy.requires_approval(agent=agent, tool_name="write_file", arguments={})
    settings.APPROVAL_REQUIRED_TOOLS = []
    assert not policy.requires_approval(agent=agent, tool_name="read_file", arguments={})


class AllowAll(ToolPolicy):
    pass


class NotAPolicy:
    pass


def test_it_loads_the_configured_policy_once_per_setting(settings) -> None:
    settings.TOOL_POLICY = "agents.policy.DefaultToolPolicy"
    first = get_policy()
    assert isinstance(first, DefaultToolPolicy)
    assert get_policy() is first

    settings.TOOL_POLICY = f"{__name__}.AllowAll"
    custom = get_policy()
    assert isinstance(custom, AllowAll)
    assert custom.check(agent=AGENTS["ask"], tool_name="write_file", arguments={}) is None
    assert not custom.requires_approval(agent=AGENTS["ask"], tool_name="write_file", arguments={})


def test_it_refuses_a_policy_that_is_not_a_tool_policy(settings) -> None:
    from django.core.exceptions import ImproperlyConfigured

    settings.TOOL_POLICY = f"{__name__}.NotAPolicy"
    _load_policy.cache_clear()
    with pytest.raises(ImproperlyConfigured, match="not a ToolPolicy"):
        get_policy()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", {}),
        ("   \n", {}),
        (None, {}),
        ('{"path": "a.py"}', {"path": "a.py"}),
        ('{"nested": {"a": [1, 2]}}', {"nested": {"a": [1, 2]}}),
    ],
)
def test_it_parses_argument_objects(raw: str, expected: dict[str, Any]) -> None:
    assert parse_arguments(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"path": "a.py"', "not valid JSON"),
        ("{'path': 'a.py'}", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, not an array"),
        ('"a.py"', "must be a JSON object, not a string"),
        ("42", "must be a JSON object, not a number"),
        ("true", "must be a JSON object, not a boolean"),
        ("null", "must be a JSON object, not null"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_it_rejects_arguments_that_are_not_a_json_object(raw: str, message: str) -> None:
    with pytest.raises(InvalidArguments, match=message) as excinfo:
        parse_arguments(raw)
    assert isinstance(excinfo.value, ValueError)
