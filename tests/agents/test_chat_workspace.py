"""The terminal chat's tools (agents.chat.workspace) and where it connects (target_for).

Real files in a temporary directory, real subprocesses; no server needed.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from agents.chat.client import ChatError, target_for
from agents.chat.workspace import ToolError, Workspace


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    (workspace / "src" / "pkg").mkdir(parents=True)
    (workspace / "src" / "app.py").write_text("import os\n\ndef main():\n    return 'TODO later'\n")
    (workspace / "src" / "pkg" / "util.py").write_text("# todo: tidy\nVALUE = 1\n")
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text("TODO hidden\n")
    (workspace / "README.md").write_text("line 1\nline 2\nline 3\nline 4\n")
    (tmp_path / "secret.txt").write_text("TODO outside\n")
    return workspace


def run(workspace: Workspace, tool: str, **arguments: object) -> str:
    return asyncio.run(workspace.run(tool, dict(arguments)))


# --- confinement -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["../secret.txt", "src/../../secret.txt", "/etc/passwd", ".."])
def test_it_refuses_every_path_outside_the_workspace(root, path):
    with pytest.raises(ToolError, match="outside the workspace"):
        run(Workspace(root), "read_file", path=path)
    with pytest.raises(ToolError, match="not a usable path"):
        run(Workspace(root), "read_file", path="a\x00b")


def test_it_refuses_a_symlink_that_points_out(root):
    (root / "link.txt").symlink_to(root.parent / "secret.txt")
    (root / "linkdir").symlink_to(root.parent)
    workspace = Workspace(root)
    for tool, arguments in [
        ("read_file", {"path": "link.txt"}),
        ("write_file", {"path": "link.txt", "content": "x"}),
        ("write_file", {"path": "linkdir/new.txt", "content": "x"}),
        ("list_files", {"path": "linkdir"}),
        ("create_directory", {"path": "linkdir/sub"}),
        ("execute_command", {"command": "pwd", "cwd": "linkdir"}),
    ]:
        with pytest.raises(ToolError, match="outside the workspace"):
            run(workspace, tool, **arguments)
    assert (root.parent / "secret.txt").read_text() == "TODO outside\n"
    assert not (root.parent / "new.txt").exists() and not (root.parent / "sub").exists()


def test_an_absolute_path_inside_the_workspace_is_fine(root):
    assert run(Workspace(root), "read_file", path=str(root / "README.md")).startswith("line 1")


# --- reading, listing, searching ---------------------------------------------------------------


def test_it_reads_a_file_or_some_of_its_lines(root):
    workspace = Workspace(root)
    assert run(workspace, "read_file", path="README.md") == "line 1\nline 2\nline 3\nline 4\n"
    assert run(workspace, "read_file", path="README.md", start_line=2, end_line=3) == (
        "line 2\nline 3\n"
    )
    (root / "blob.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ToolError, match="binary"):
        run(workspace, "read_file", path="blob.bin")
    with pytest.raises(ToolError, match="no such file"):
        run(workspace, "read_file", path="missing.txt")
    with pytest.raises(ToolError, match="start_line"):
        run(workspace, "read_file", path="README.md", start_line="2")


def test_it_lists_files_without_hidden_ones_or_followed_links(root):
    (root / "outlink").symlink_to(root.parent)
    workspace = Workspace(root)
    assert run(workspace, "list_files", path=".").split("\n") == [
        "README.md",
        "outlink",
        "src/",
    ]
    assert run(workspace, "list_files", path="src", recursive=True).split("\n") == [
        "src/app.py",
        "src/pkg/",
        "src/pkg/util.py",
    ]
    listed = run(workspace, "list_files", path=".", recursive=True, include_hidden=True)
    assert ".git/config" in listed and "secret" not in listed
    assert run(workspace, "list_files", path=".", recursive=True, pattern="*.py").split("\n") == [
        "src/app.py",
        "src/pkg/util.py",
    ]


def test_it_searches_text_files_inside_the_workspace_only(root):
    (root / "outlink.txt").symlink_to(root.parent / "secret.txt")
    workspace = Workspace(root)
    found = run(workspace, "search_in_code", query="todo")
    assert found.split("\n") == [
        "src/app.py:4: return 'TODO later'",
        "src/pkg/util.py:1: # todo: tidy",
    ]
    assert run(workspace, "search_in_code", query="todo", case_sensitive=True) == (
        "src/pkg/util.py:1: # todo: tidy"
    )
    assert run(workspace, "search_in_code", query=r"VALUE\s=", regex=True, file_pattern="*.py") == (
        "src/pkg/util.py:2: VALUE = 1"
    )
    assert run(workspace, "search_in_code", query="todo", max_results=1).endswith(
        "[stopped at 1 matches]"
    )
    assert run(workspace, "search_in_code", query="nothing like it") == (
        "No matches for 'nothing like it'."
    )
    with pytest.raises(ToolError, match="regular expression"):
        run(workspace, "search_in_code", query="(", regex=True)


# --- changing things ---------------------------------------------------------------------------


def test_it_writes_whole_files_with_ordinary_permissions(root):
    workspace = Workspace(root)
    assert run(workspace, "write_file", path="new/dir/a.txt", content="héllo\n") == (
        "Wrote 6 characters to new/dir/a.txt."
    )
    written = root / "new" / "dir" / "a.txt"
    assert written.read_text() == "héllo\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask
    os.chmod(written, 0o640)
    run(workspace, "write_file", path="new/dir/a.txt", content="again\n", backup=True)
    assert written.read_text() == "again\n"
    assert (root / "new" / "dir" / "a.txt.bak").read_text() == "héllo\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o640  # the file keeps its permissions
    assert sorted(p.name for p in written.parent.iterdir()) == ["a.txt", "a.txt.bak"]
    with pytest.raises(ToolError, match="no such directory"):
        run(workspace, "write_file", path="nope/b.txt", content="x", create_dirs=False)
    with pytest.raises(ToolError, match="is a directory"):
        run(workspace, "write_file", path="src", content="x")


def test_it_creates_directories(root):
    workspace = Workspace(root)
    assert run(workspace, "create_directory", path="a/b") == "Created the directory a/b."
    assert (root / "a" / "b").is_dir()
    assert run(workspace, "create_directory", path="a/b") == "a/b already exists."
    with pytest.raises(ToolError, match="no such directory"):
        run(workspace, "create_directory", path="x/y", recursive=False)


def test_it_runs_commands_in_the_workspace(root):
    workspace = Workspace(root)
    assert (
        run(workspace, "execute_command", command="pwd")
        == f"Exit code: 0\n--- stdout ---\n{root}\n"
    )
    assert run(workspace, "execute_command", command="pwd", cwd="src", shell=False) == (
        f"Exit code: 0\n--- stdout ---\n{root / 'src'}\n"
    )
    assert run(workspace, "execute_command", command="echo oops >&2; exit 3") == (
        "Exit code: 3\n--- stderr ---\noops\n"
    )
    with pytest.raises(ToolError, match="did not finish within 1 s"):
        run(workspace, "execute_command", command="sleep 30", timeout=1)


def test_a_cancelled_command_is_killed(root):
    workspace = Workspace(root)

    async def cancel_it() -> None:
        task = asyncio.ensure_future(
            workspace.run("execute_command", {"command": "sleep 0.5; touch late.txt"})
        )
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(1.0)

    asyncio.run(cancel_it())
    assert not (root / "late.txt").exists()


# --- where the chat connects -------------------------------------------------------------------


def test_it_connects_where_make_run_listens(monkeypatch):
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    target = target_for(None, key="k")
    assert (target.http, target.ws) == ("http://127.0.0.1:8000", "ws://127.0.0.1:8000")
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "8765")
    target = target_for(None, key="k")
    assert (target.http, target.ws) == ("http://127.0.0.1:8765", "ws://127.0.0.1:8765")


@pytest.mark.parametrize(
    ("url", "http", "ws"),
    [
        ("http://example.test:9000/", "http://example.test:9000", "ws://example.test:9000"),
        (
            "https://example.test/runtime",
            "https://example.test/runtime",
            "wss://example.test/runtime",
        ),
        ("ws://localhost:8000", "http://localhost:8000", "ws://localhost:8000"),
        ("localhost:8000", "http://localhost:8000", "ws://localhost:8000"),
    ],
)
def test_it_reads_a_url(url, http, ws):
    target = target_for(url, key="k")
    assert (target.http, target.ws) == (http, ws)


def test_it_refuses_what_is_not_a_runtime_url():
    with pytest.raises(ChatError, match="not a runtime URL"):
        target_for("ftp://example.test", key="k")
