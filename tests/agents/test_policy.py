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
from agents.registry import AGENTS, AgentSpec, FileRule

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


# What an attacker-controlled model might send the architect to write something other than a
# Markdown file inside the project, and the reason the model is told.
ESCAPES = [
    ("../x.md", 'it climbs out of the workspace with "..".'),
    ("docs/../../x.md", 'it climbs out of the workspace with "..".'),
    ("..\\x.md", 'it climbs out of the workspace with "..".'),
    ("docs\\..\\..\\x.md", 'it climbs out of the workspace with "..".'),
    ("/etc/x.md", "it is an absolute path."),
    # POSIX reads "//etc" as "/etc"; Windows as the share "etc" of a server.
    ("//etc/x.md", "it names a network share or a device (\\\\server\\...)."),
    ("\\etc\\x.md", "it is an absolute path."),
    ("C:\\Users\\me\\x.md", "it is an absolute path."),
    # posixpath.normpath alone would turn this one into "x.md": the drive must go first.
    ("C:/proj/../../x.md", "it is an absolute path."),
    ("C:x.md", "it is relative to the current directory of drive C:, which may be anywhere."),
    ("\\\\server\\share\\x.md", "it names a network share or a device (\\\\server\\...)."),
    ("\\\\?\\C:\\x.md", "it names a network share or a device (\\\\server\\...)."),
    ("~/x.md", 'it starts with "~", which a shell expands to a home directory.'),
    ("~root/x.md", 'it starts with "~", which a shell expands to a home directory.'),
    (
        "x.py:.md",
        'it contains ":", which on Windows names an alternate data stream of another file '
        '("x.py:.md" writes into x.py).',
    ),
    (
        "docs/x.py::$DATA:.md",
        'it contains ":", which on Windows names an alternate data stream of another file '
        '("x.py:.md" writes into x.py).',
    ),
    ("x.md/", "it ends like a directory, not a file."),
    ("docs/x.md/.", "it ends like a directory, not a file."),
    ("docs/..", "it ends like a directory, not a file."),
    ("x.md.", 'it has a name ending in a dot or a space ("x.md."), which Windows drops.'),
    ("x.md ", 'it has a name ending in a dot or a space ("x.md "), which Windows drops.'),
    ("docs./x.md", 'it has a name ending in a dot or a space ("docs."), which Windows drops.'),
    ("aux.md", 'it uses "aux.md", which Windows opens as a device, not a file.'),
    ("docs/CON.md", 'it uses "CON.md", which Windows opens as a device, not a file.'),
    ("com1 .md", 'it uses "com1 .md", which Windows opens as a device, not a file.'),
    ("x.md\n", "it contains an invisible or control character (U+000A)."),
    ("x\u202edm.py", "it contains an invisible or control character (U+202E)."),
]


@pytest.mark.parametrize(("path", "why"), ESCAPES)
def test_it_refuses_the_architect_paths_that_escape_or_trick_the_rule(path: str, why: str) -> None:
    refusal = check("architect", "write_file", path=path, content="x")
    assert refusal == Refusal(
        f'The architect agent may only write Markdown files (*.md); "{path}" is not allowed: '
        f"{why} Name the file by its path inside the project, relative to the project root "
        '(such as "docs/notes.md").'
    )


@pytest.mark.parametrize(
    "path",
    [
        "docs/a.md",
        "./a.md",
        "a/../b.md",
        "docs//a.md",
        "docs/./design/../plan.md",
        ".github/CONTRIBUTING.md",
        "notes.v2.md",
        "read me.md",
        "docs\\a.md",
    ],
)
def test_it_lets_the_architect_write_markdown_inside_the_workspace(path: str) -> None:
    assert check("architect", "write_file", path=path, content="# Plan") is None


@pytest.mark.parametrize(
    "path",
    [
        # Inside the workspace, but not Markdown once normalised: the rule itself refuses.
        "docs/a.md/../../src/app.py",
        "x.md\\..\\app.py",
        "a.md.py",
    ],
)
def test_it_judges_the_normalised_path_against_the_rule(path: str) -> None:
    refusal = check("architect", "write_file", path=path, content="x")
    assert refusal == Refusal(
        f'The architect agent may only write Markdown files (*.md); "{path}" is not allowed.'
    )


@pytest.mark.parametrize(
    "path",
    [
        "/work/proj/docs/a.md",
        "/work/proj/a.md",
        "/work/proj/../proj/docs/a.md",
        "\\work\\proj\\docs\\a.md",
        "docs/a.md",
    ],
)
def test_it_allows_absolute_paths_inside_the_workspace_root(settings, path: str) -> None:
    settings.WORKSPACE_ROOT = "/work/proj/"
    assert check("architect", "write_file", path=path, content="#") is None


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/work/other/a.md", "it is outside the workspace (/work/proj)."),
        ("/work/proj/../other/a.md", "it is outside the workspace (/work/proj)."),
        # A sibling whose name starts like the root's is not inside it.
        ("/work/project/a.md", "it is outside the workspace (/work/proj)."),
        # Compared case-sensitively: on Linux this is another directory.
        ("/work/PROJ/a.md", "it is outside the workspace (/work/proj)."),
        ("/etc/a.md", "it is outside the workspace (/work/proj)."),
        # Inside on Linux, but on Windows the server "work"'s share "proj".
        ("//work/proj/a.md", "it names a network share or a device (\\\\server\\...)."),
        ("C:/work/proj/a.md", "it is outside the workspace (/work/proj)."),
        ("../a.md", 'it climbs out of the workspace with "..".'),
    ],
)
def test_it_refuses_absolute_paths_outside_the_workspace_root(
    settings, path: str, why: str
) -> None:
    settings.WORKSPACE_ROOT = "/work/proj"
    refusal = check("architect", "write_file", path=path, content="#")
    assert refusal is not None
    assert refusal.reason.startswith(
        f'The architect agent may only write Markdown files (*.md); "{path}" is not allowed: {why} '
    )


def test_it_judges_the_rest_of_a_path_under_the_root_against_the_rule(settings) -> None:
    settings.WORKSPACE_ROOT = "/work/proj"
    refusal = check("architect", "write_file", path="/work/proj/src/app.py", content="x")
    assert refusal == Refusal(
        'The architect agent may only write Markdown files (*.md); "/work/proj/src/app.py" is '
        "not allowed."
    )


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("C:\\Users\\me\\proj\\docs\\a.md", True),
        ("c:/Users/me/proj/a.md", True),
        ("C:\\Users\\me\\other\\a.md", False),
        ("D:\\Users\\me\\proj\\a.md", False),
        ("C:\\Users\\me\\proj\\..\\other\\a.md", False),
        ("/Users/me/proj/a.md", False),
    ],
)
def test_it_understands_a_windows_workspace_root(settings, path: str, allowed: bool) -> None:
    settings.WORKSPACE_ROOT = "C:\\Users\\me\\proj"
    assert (check("architect", "write_file", path=path, content="#") is None) is allowed


# An agent whose rule binds every tool with path arguments to the docs directory: the rule
# must judge each of them, "cwd" included, not only write_file's "path".
DOCS_ONLY = AgentSpec(
    type="docs",
    name="Docs",
    description="Works on the documentation only.",
    prompt="",
    tools=frozenset(
        {"read_file", "list_files", "create_directory", "execute_command", "search_in_code"}
    ),
    file_rules=(
        FileRule(
            tools=frozenset(
                {"read_file", "list_files", "create_directory", "execute_command", "search_in_code"}
            ),
            allowed_globs=("docs", "docs/*"),
            description="may only touch the docs directory",
        ),
    ),
)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("read_file", {"path": "docs/a.md"}),
        ("list_files", {"path": "docs/"}),
        ("list_files", {"path": "./docs"}),
        ("create_directory", {"path": "docs/adr"}),
        ("execute_command", {"command": "make html", "cwd": "docs"}),
        ("execute_command", {"command": "make html"}),
        ("search_in_code", {"query": "TODO", "path": "docs/guide"}),
        ("search_in_code", {"query": "TODO"}),
    ],
)
def test_it_allows_every_path_argument_the_rule_allows(
    tool: str, arguments: dict[str, Any]
) -> None:
    assert DefaultToolPolicy().check(agent=DOCS_ONLY, tool_name=tool, arguments=arguments) is None


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        (
            "execute_command",
            {"command": "rm -rf .", "cwd": "docs/../src"},
            'The docs agent may only touch the docs directory; the cwd "docs/../src" is not '
            "allowed.",
        ),
        (
            "execute_command",
            {"command": "rm -rf .", "cwd": "../other"},
            'The docs agent may only touch the docs directory; the cwd "../other" is not '
            'allowed: it climbs out of the workspace with "..". Name the directory by its path '
            'inside the project, relative to the project root (such as "docs/notes.md").',
        ),
        (
            "search_in_code",
            {"query": "password", "path": "/home/me/.ssh"},
            'The docs agent may only touch the docs directory; "/home/me/.ssh" is not allowed: '
            "it is an absolute path. Name the file or directory by its path inside the project, "
            'relative to the project root (such as "docs/notes.md").',
        ),
        (
            "list_files",
            {"path": "."},
            'The docs agent may only touch the docs directory; "." is not allowed.',
        ),
        # On a POSIX IDE this is a file named "src\..\docs\a.py" at the root, not docs/a.py.
        (
            "read_file",
            {"path": "src\\..\\docs\\a.py"},
            'The docs agent may only touch the docs directory; "src\\..\\docs\\a.py" is not '
            "allowed.",
        ),
    ],
)
def test_it_judges_every_path_argument_of_a_rule_bound_tool(
    tool: str, arguments: dict[str, Any], expected: str
) -> None:
    refusal = DefaultToolPolicy().check(agent=DOCS_ONLY, tool_name=tool, arguments=arguments)
    assert refusal == Refusal(expected)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("write_file", {"path": "../elsewhere/app.py", "content": ""}),
        ("write_file", {"path": "/tmp/x.py", "content": ""}),
        ("read_file", {"path": "C:\\Windows\\win.ini"}),
        ("execute_command", {"command": "ls", "cwd": "/"}),
    ],
)
def test_it_leaves_paths_of_tools_without_a_rule_alone(
    tool: str, arguments: dict[str, Any]
) -> None:
    # The coder has no file rules: where it may write is the approving human's call.
    assert check("coder", tool, **arguments) is None
    assert check("architect", "read_file", path="../elsewhere/app.py") is None


def test_it_refuses_a_relative_workspace_root(settings) -> None:
    from django.core.checks import run_checks
    from django.core.exceptions import ImproperlyConfigured

    settings.WORKSPACE_ROOT = "work/proj"
    assert "agent_runtime.E013" in {e.id for e in run_checks()}
    with pytest.raises(ImproperlyConfigured, match="WORKSPACE_ROOT must be an absolute path"):
        check("architect", "write_file", path="a.md", content="#")

    settings.WORKSPACE_ROOT = "C:\\work"
    assert "agent_runtime.E013" not in {e.id for e in run_checks()}


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
