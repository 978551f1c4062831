"""The playground in Chromium: a staff member chats, decides and answers over the session socket
while an IDE (a ``websockets`` client with the key) is connected to the same session.

Real daphne, the fake LLM over HTTP, the staff login of the admin. Nothing here measures time:
a reply held half-way by the fake LLM (``fakellm.held``) shows that tokens reach the page
before the rest of the answer exists.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import fakellm
from tests.browser.common import (
    LAPTOP,
    USERNAME,
    daphne_log_on_failure,
    ide_socket,
    log_in,
    read_turn,
    start_session,
)
from tests.e2e.server import Runtime
from tests.fakellm import FakeLLM

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LATEST_SCREENSHOT = Path("/tmp/playground-latest.png")  # noqa: S108  (a copy to look at)


def open_playground(page: Any, session_id: str) -> None:
    from playwright.sync_api import expect

    log_in(page, next_url=f"/playground/{session_id}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")


def say(page: Any, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


def call_card(
    page: Any,
    fake: FakeLLM,
    rest: httpx.Client,
    session_id: str,
    call: tuple[str, str, str],
    *,
    then: str,
) -> Any:
    """A new session whose first message gets ``call`` (id, tool, arguments JSON) and, once
    that is answered or decided, the reply ``then``; returns the call's card on the page."""
    fake.reset()
    start_session(rest, session_id)
    fake.enqueue(fakellm.tool_calls([call]), fakellm.text(then))
    open_playground(page, session_id)
    say(page, f"please use {call[1]}")
    return page.locator(f'#chat-log li.call[data-call-id="{call[0]}"]')


def history(rest: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    response = rest.get(f"/sessions/{session_id}/history")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def test_it_streams_an_answer_into_the_page_token_by_token(
    runtime: Runtime,
    fake: FakeLLM,
    laptop: Any,
    rest: httpx.Client,
    screenshots: Path,
) -> None:
    from playwright.sync_api import expect

    page = laptop
    session_id = "pg-stream"
    answer = "Tokens arrive one at a time, <b>as text</b>."
    with daphne_log_on_failure(runtime):
        fake.reset()
        start_session(rest, session_id)
        script, gate = fakellm.held(fakellm.text(answer), after=3)
        fake.enqueue(script)
        open_playground(page, session_id)
        say(page, "stream something")
        expect(page.locator("#chat-log li.role-user").last).to_contain_text("stream something")

        # The model has sent three tokens and waits: they are on the page, the rest is not
        # (the runtime holds back one character for the final chunk).
        reply = page.locator("#chat-log li.role-assistant").last
        expect(reply.locator(".text")).to_have_text("Tokens arrive one")
        expect(reply).to_have_class("entry live role-assistant streaming")
        page.screenshot(path=str(screenshots / "playground-streaming.png"))

        gate.set()
        expect(reply.locator(".text")).to_have_text(answer)
        expect(reply).to_have_class("entry live role-assistant final")
        assert page.locator("#chat-log b").count() == 0  # the model's markup stays text
        last = history(rest, session_id)[-1]
        assert (last["role"], last["content"]) == ("assistant", answer)

        # It fits a 1366 x 768 screen: nothing wider than the window, the composer in view.
        widths = page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], widths
        send = page.locator("#send").bounding_box()
        assert send is not None and send["y"] + send["height"] <= LAPTOP["height"], send
        shot = screenshots / "playground.png"
        page.screenshot(path=str(shot))
        shutil.copyfile(shot, LATEST_SCREENSHOT)
        print(f"playground screenshots: {screenshots}")


def test_an_edit_decided_in_the_page_reaches_the_ide(
    runtime: Runtime, fake: FakeLLM, page: Any, rest: httpx.Client, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    session_id = "pg-approve"
    arguments = {"path": "notes.md", "content": "one\ntwo\n"}
    with daphne_log_on_failure(runtime):
        fake.reset()
        start_session(rest, session_id)
        ide = ide_socket(runtime, session_id)
        try:
            open_playground(page, session_id)
            fake.enqueue(
                fakellm.tool_calls(
                    [("call_w", "write_file", json.dumps(arguments))],
                    text_before="I will write the notes.",
                )
            )
            say(page, "write the notes")

            # The IDE sees the turn the page started, ending on the held call...
            held = read_turn(ide)[-1]
            assert (held["call_id"], held["requires_approval"]) == ("call_w", True)
            # ...and the page draws the call with its decision buttons.
            card = page.locator('#chat-log li.call[data-call-id="call_w"]')
            expect(card).to_have_attribute("data-state", "held")
            expect(card.locator(".path")).to_have_text("notes.md")
            expect(card.locator("pre.file-content")).to_have_text("one\ntwo\n")
            page.screenshot(path=str(screenshots / "playground-held.png"), full_page=True)

            card.locator('button[data-action="edit"]').click()
            card.locator("textarea.edit-arguments").fill("one\n2\nthree\n")
            card.locator("input.feedback").fill("numbers, please")
            card.locator('button[data-action="release"]').click()

            # The IDE gets the call released with the edited file content, in the staff
            # member's name.
            released = read_turn(ide)
        finally:
            ide.close()
        assert len(released) == 1, released
        call = released[0]
        assert call["type"] == "tool_call" and call["call_id"] == "call_w"
        assert call["requires_approval"] is False
        assert call["arguments"] == {"path": "notes.md", "content": "one\n2\nthree\n"}
        decision = call["metadata"]["decision"]
        assert decision["status"] == "edited"
        assert decision["decided_by"] == f"staff:{USERNAME}"
        assert decision["feedback"] == "numbers, please"

        # The same card, in place: released for the IDE, saying who edited it.
        expect(card).to_have_attribute("data-state", "for-ide")
        expect(card.locator(".decided")).to_contain_text(f"edited by staff:{USERNAME}")
        expect(card.locator("pre.file-content")).to_have_text("one\n2\nthree\n")
        expect(page.locator("#chat-log li.call")).to_have_count(1)
        pending = rest.get(f"/sessions/{session_id}/pending-approvals").json()
        assert pending["count"] == 0


def test_it_answers_a_read_only_call_with_a_typed_result(
    runtime: Runtime, fake: FakeLLM, page: Any, rest: httpx.Client
) -> None:
    from playwright.sync_api import expect

    session_id = "pg-result"
    typed = "print('hi')\n<script>window.pwned = 1</script>\n"
    with daphne_log_on_failure(runtime):
        call = ("call_r", "read_file", '{"path": "app.py"}')
        card = call_card(page, fake, rest, session_id, call, then="app.py prints hi.")
        expect(card).to_have_attribute("data-state", "for-ide")
        expect(card.locator(".badge")).to_have_text("for the IDE to run")
        card.locator("textarea.tool-result").fill(typed)
        card.locator('button[data-action="send-result"]').click()

        reply = page.locator("#chat-log li.role-assistant.final").last
        expect(reply.locator(".text")).to_have_text("app.py prints hi.")
        expect(card).to_have_attribute("data-state", "settled")
        assert page.evaluate("() => window.pwned") is None

    # The model read exactly what was typed, as the result of its call.
    [tool_message] = [m for m in fake.requests[-1]["messages"] if m["role"] == "tool"]
    assert tool_message["tool_call_id"] == "call_r"
    assert tool_message["content"] == typed


def test_it_shows_a_session_another_client_drives(
    runtime: Runtime, fake: FakeLLM, page: Any, rest: httpx.Client, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    session_id = "pg-watch"
    answer = "Watched from afar <img src=x onerror='window.pwned=1'> token by token."
    with daphne_log_on_failure(runtime):
        fake.reset()
        start_session(rest, session_id)
        open_playground(page, session_id)
        ide = ide_socket(runtime, session_id)
        try:
            script, gate = fakellm.held(fakellm.text(answer), after=2)
            fake.enqueue(script)
            # The IDE drives: the page sent nothing.
            message = {"type": "user_message", "content": "explain", "agent_type": "ask"}
            ide.send(json.dumps(message))
            switch = page.locator("#chat-log li.switch").last
            expect(switch).to_contain_text("Switched to ask agent (from coder): User requested")
            expect(page.locator("#current-agent")).to_have_text("ask")
            reply = page.locator("#chat-log li.role-assistant").last
            expect(reply.locator(".text")).to_have_text("Watched from")
            expect(reply).to_have_class("entry live role-assistant streaming watched")
            gate.set()
            expect(reply.locator(".text")).to_have_text(answer)
            chunks = read_turn(ide)
        finally:
            ide.close()
        assert "".join(c["token"] or "" for c in chunks if c["type"] == "assistant_message") == (
            answer
        )
        expect(reply.locator(".who")).to_contain_text("another client")
        assert page.locator("#chat-log img").count() == 0
        assert page.evaluate("() => window.pwned") is None
        assert page.locator("#chat-log li.role-user.live").count() == 0
        page.screenshot(path=str(screenshots / "playground-watching.png"))


def test_a_rejection_in_the_page_goes_back_to_the_model(
    runtime: Runtime, fake: FakeLLM, page: Any, rest: httpx.Client
) -> None:
    from playwright.sync_api import expect

    session_id = "pg-reject"
    with daphne_log_on_failure(runtime):
        call = ("call_x", "execute_command", '{"command": "make deploy"}')
        card = call_card(page, fake, rest, session_id, call, then="Understood, no deploy.")
        expect(card.locator("pre.shell-command")).to_have_text("make deploy")
        card.locator("input.feedback").fill("Not on a Friday.")
        card.locator('button[data-action="reject"]').click()

        summary = f"The execute_command call was rejected by staff:{USERNAME}: Not on a Friday."
        expect(page.locator("#chat-log li.decision .text")).to_have_text(summary + "\n\n")
        expect(card).to_have_attribute("data-state", "settled")
        expect(card.locator(".settled")).to_have_text(summary)
        expect(card.locator("button")).to_have_count(0)
        reply = page.locator("#chat-log li.role-assistant.final").last
        expect(reply.locator(".text")).to_have_text("Understood, no deploy.")
    tool_results = [m for m in fake.requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_results] == ["call_x"]
    assert "Not on a Friday." in tool_results[0]["content"]
