"""``manage.py chat`` as a user runs it: a subprocess with scripted stdin, against real daphne.

The fake LLM is scripted to stream and to call tools; the chat runs the calls in a temporary
workspace and decides held ones at its prompt. What the model was told is read from the fake's
recorded requests, what was decided from the runtime's database.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import fakellm
from tests.e2e.conftest import AUTH, start_runtime
from tests.e2e.server import API_KEY, ROOT, Runtime

pytestmark = pytest.mark.e2e

WAIT = 30.0  # generous for a loaded 2-core machine; never a timing assertion


@pytest.fixture(scope="module")
def runtime(request: pytest.FixtureRequest, sqlite_url: str, fake_llm_server: Any) -> Runtime:
    return start_runtime(request, database_url=sqlite_url, llm_url=fake_llm_server.url, name="chat")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    root.mkdir()
    (root / "notes.txt").write_text("The secret word is plover.\n")
    (tmp_path / "outside.txt").write_text("never leaves the machine: heron\n")
    return root


class ChatProcess:
    """The command in a subprocess: stdin and stdout are pipes, as in a script."""

    def __init__(self, runtime: Runtime, workspace: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "HOST", "PORT")}
        env.update({"INTERNAL_API_KEY": API_KEY, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
        env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
        self.session = f"chat-{uuid.uuid4().hex[:10]}"
        command = [sys.executable, "manage.py", "chat", "--url", runtime.url]
        command += ["--session", self.session, "--workspace", str(workspace), *args]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.output = ""
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while piece := self.proc.stdout.read(1):
            with self.changed:
                self.output += piece
                self.changed.notify_all()

    def type(self, *lines: str, close: bool = False) -> None:
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        if close:
            self.proc.stdin.close()

    def wait_for(self, text: str, *, since: int = 0) -> str:
        """The output once ``text`` appears in it (after its first ``since`` characters)."""
        deadline = time.monotonic() + WAIT
        with self.changed:
            while text not in self.output[since:]:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self.reader.is_alive():
                    raise AssertionError(f"{text!r} never appeared; output:\n{self.output}")
                self.changed.wait(min(left, 0.5))
            return self.output

    def finish(self) -> tuple[int, str]:
        """Exit status and the whole output, once the process has ended."""
        try:
            code = self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(5)
        assert self.proc.stderr is not None
        errors = self.proc.stderr.read()
        assert "Traceback" not in errors, errors
        return code, self.output


def run_chat(runtime: Runtime, workspace: Path, *lines: str, args: tuple[str, ...] = ()) -> Any:
    """Type the lines, end the input (Ctrl-D), and return the finished process."""
    chat = ChatProcess(runtime, workspace, *args)
    chat.type(*lines, close=True)
    code, output = chat.finish()
    assert code == 0, output
    return chat, output


def call(name: str, arguments: dict[str, Any]) -> tuple[str, fakellm.Script]:
    call_id = f"call_{uuid.uuid4().hex[:10]}"
    return call_id, fakellm.tool_calls([(call_id, name, json.dumps(arguments))])


def tool_message(request: dict[str, Any], call_id: str) -> str:
    """What the model was told about a call, from one recorded request."""
    for message in request["messages"]:
        if message["role"] == "tool" and message["tool_call_id"] == call_id:
            return str(message["content"])
    raise AssertionError(f"no tool result for {call_id} in {request['messages']}")


def approval_row(sqlite_url: str, call_id: str) -> tuple[Any, ...]:
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT status, decided_by_kind, decided_by, edited_arguments, feedback "
            "FROM approvals_approval WHERE call_id = ?",
            (call_id,),
        ).fetchone()
    assert row is not None, f"no approval row for {call_id}"
    return tuple(row)


# --- streaming and routing ---------------------------------------------------------------------


def test_it_streams_the_answer_as_it_comes(runtime, fake, workspace):
    words = [f"word{i:02d}" for i in range(12)]
    # Slow enough that the first words are on screen long before the last one is sent.
    fake.enqueue(fakellm.classify("coder"), fakellm.text(" ".join(words) + ".", delay=0.3))
    chat = ChatProcess(runtime, workspace)
    chat.type("tell me something")
    early = chat.wait_for(words[1])
    assert words[-1] not in early  # on screen before the model had finished
    chat.wait_for(words[-1] + ".")
    chat.type(close=True)
    code, output = chat.finish()
    assert code == 0, output
    # The routing shown inline, then the reply with the agent that gives it.
    assert "Switched to coder agent" in output
    assert f"coder: {' '.join(words)}." in output
    assert output.index("Switched to coder agent") < output.index(words[0])


# --- tools that only read: run at once, the result goes to the model ----------------------------


def test_it_runs_a_read_only_call_in_the_workspace(runtime, fake, workspace):
    call_id, script = call("read_file", {"path": "notes.txt"})
    fake.enqueue(script, fakellm.text("The word is plover."))
    _, output = run_chat(runtime, workspace, "what is the secret word?", args=("--agent", "coder"))
    assert "read_file" in output
    assert "waits for your approval" not in output
    assert "coder: The word is plover." in output
    told = tool_message(fake.requests[-1], call_id)
    assert told == "The secret word is plover.\n"


def test_it_refuses_paths_that_leave_the_workspace(runtime, fake, workspace):
    (workspace / "link.txt").symlink_to(workspace.parent / "outside.txt")
    escapes = [
        call("read_file", {"path": "../outside.txt"}),
        call("read_file", {"path": str(workspace.parent / "outside.txt")}),
        call("read_file", {"path": "link.txt"}),
        call("list_files", {"path": ".."}),
    ]
    for _, script in escapes:
        fake.enqueue(script)
    fake.enqueue(fakellm.text("I could not read those."))
    _, output = run_chat(runtime, workspace, "read around", args=("--agent", "coder"))
    assert "coder: I could not read those." in output
    for call_id, _ in escapes:
        told = tool_message(fake.requests[-1], call_id)
        assert told.startswith("Error: ") and "outside the workspace" in told, told
        assert "heron" not in told


# --- writes: held by the runtime, decided at the prompt -----------------------------------------


def test_it_writes_only_after_the_user_approves(runtime, fake, workspace, sqlite_url):
    call_id, script = call("write_file", {"path": "out/hello.txt", "content": "hi there\n"})
    fake.enqueue(script, fakellm.text("Written."))
    _, output = run_chat(runtime, workspace, "write hello", "a", args=("--agent", "coder"))
    assert "write_file waits for your approval" in output
    assert (workspace / "out" / "hello.txt").read_text() == "hi there\n"
    assert approval_row(sqlite_url, call_id)[:3] == ("approved", "ide", "ide")
    told = tool_message(fake.requests[-1], call_id)
    assert told.startswith("The write_file call was approved by"), told
    assert "Wrote 9 characters to out/hello.txt" in told
    assert "coder: Written." in output


def test_a_rejected_write_leaves_the_file_alone_and_the_model_is_told(
    runtime, fake, workspace, sqlite_url
):
    call_id, script = call("write_file", {"path": "notes.txt", "content": "overwritten\n"})
    fake.enqueue(script, fakellm.text("Understood, I left it."))
    _, output = run_chat(
        runtime, workspace, "change the notes", "r keep my notes", args=("--agent", "coder")
    )
    assert (workspace / "notes.txt").read_text() == "The secret word is plover.\n"
    status, kind, _, _, feedback = approval_row(sqlite_url, call_id)
    assert (status, kind, feedback) == ("rejected", "ide", "keep my notes")
    told = tool_message(fake.requests[-1], call_id)
    assert "rejected" in told and "keep my notes" in told, told
    assert "coder: Understood, I left it." in output


def test_an_edited_write_runs_with_the_edited_arguments(runtime, fake, workspace, sqlite_url):
    call_id, script = call("write_file", {"path": "draft.txt", "content": "first\n"})
    fake.enqueue(script, fakellm.text("Saved."))
    edited = {"path": "final.txt", "content": "second\n"}
    _, output = run_chat(
        runtime, workspace, "save it", "e", json.dumps(edited), args=("--agent", "coder")
    )
    assert not (workspace / "draft.txt").exists()
    assert (workspace / "final.txt").read_text() == "second\n"
    status, _, _, arguments, _ = approval_row(sqlite_url, call_id)
    assert (status, json.loads(arguments)) == ("edited", edited)
    told = tool_message(fake.requests[-1], call_id)
    assert "edited" in told and "final.txt" in told, told


# --- Ctrl-C -------------------------------------------------------------------------------------


def test_ctrl_c_cancels_the_turn_and_a_second_one_quits(runtime, fake, workspace):
    words = [f"tok{i:03d}" for i in range(100)]
    fake.enqueue(fakellm.text(" ".join(words), delay=0.2))
    chat = ChatProcess(runtime, workspace, "--agent", "coder")
    chat.type("tell me a long story")
    chat.wait_for(words[2])
    chat.proc.send_signal(signal.SIGINT)
    output = chat.wait_for("The turn was cancelled.")
    assert words[-1] not in output
    # The prompt again: the chat still runs.
    chat.wait_for("you> ", since=output.index("The turn was cancelled."))
    assert chat.proc.poll() is None
    chat.proc.send_signal(signal.SIGINT)
    code, output = chat.finish()  # stdin is still open: the signal alone ended it
    assert code == 0, output
    assert words[-1] not in output


def test_a_decision_made_elsewhere_ends_the_question(runtime, fake, workspace, sqlite_url):
    """The user sits at the approval prompt; someone decides over REST (as the admin or the
    playground would, through the same service): the chat runs what was released."""
    call_id, script = call("write_file", {"path": "elsewhere.txt", "content": "decided\n"})
    fake.enqueue(script, fakellm.text("Done."))
    chat = ChatProcess(runtime, workspace, "--agent", "coder")
    chat.type("write it")
    chat.wait_for("[a]pprove, [e]dit or [r]eject> ")
    decided = httpx.post(
        f"{runtime.url}/sessions/{chat.session}/approvals/{call_id}/decision",
        json={"decision": "approve", "decided_by": "reviewer", "feedback": "fine by me"},
        headers=AUTH,
        timeout=WAIT,
    )
    assert decided.status_code == 200, decided.text
    chat.wait_for("coder: Done.")
    chat.type(close=True)
    code, output = chat.finish()
    assert code == 0, output
    assert "write_file was decided elsewhere" in output
    assert "approved by" in output and "fine by me" in output
    assert (workspace / "elsewhere.txt").read_text() == "decided\n"
    assert approval_row(sqlite_url, call_id)[:3] == ("approved", "ide", "ide:reviewer")


def test_a_followup_question_is_answered_by_the_next_line(runtime, fake, workspace):
    call_id, script = call("ask_followup_question", {"question": "Which file do you mean?"})
    fake.enqueue(script, fakellm.text("Thanks, app.py it is."))
    _, output = run_chat(runtime, workspace, "fix it", "app.py", args=("--agent", "coder"))
    assert "? Which file do you mean?" in output
    assert "answer> app.py" in output
    assert tool_message(fake.requests[-1], call_id) == "app.py"
    assert "coder: Thanks, app.py it is." in output
