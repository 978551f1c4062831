"""A staff member decides an approval in the admin while the IDE waits on its WebSocket.

Everything is real: daphne serving the runtime on a temporary SQLite database, the fake LLM
over HTTP, an IDE-side WebSocket (``X-Internal-Auth``, no Origin) and Debian's Chromium driven by
Playwright. Without Chromium the tests skip (``tests/browser/setup.sh`` installs it); in CI they
fail instead.
"""

from __future__ import annotations

import json
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


def request_deploy(runtime: Runtime, fake: FakeLLM, rest: httpx.Client, session_id: str) -> Any:
    """Open the IDE socket and run the turn that ends waiting on approval of ``make deploy``."""
    start_session(rest, session_id)
    fake.enqueue(fakellm.tool_calls([("call_1", "execute_command", '{"command": "make deploy"}')]))
    ws = ide_socket(runtime, session_id)
    try:
        ws.send(json.dumps({"type": "user_message", "content": "deploy"}))
        chunks = read_turn(ws)
        call = chunks[-1]
        assert call["type"] == "tool_call", chunks
        assert call["call_id"] == "call_1"
        assert call["tool_name"] == "execute_command"
        assert call["arguments"] == {"command": "make deploy"}
        assert call["requires_approval"] is True
    except BaseException:
        ws.close()
        raise
    return ws


def open_decide_page(page: Any, session_id: str) -> None:
    """From the queue, the pending execute_command row of this session → its decide page."""
    from playwright.sync_api import expect

    log_in(page)
    rows = page.locator("#result_list tbody tr").filter(has_text=session_id)
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("execute_command")
    expect(rows).to_contain_text("$ make deploy")
    rows.get_by_role("link", name="Decide →").click()
    page.wait_for_url("**/admin/approvals/approval/*/decide/")
    expect(page.locator("#approval-tool")).to_have_text("execute_command")
    expect(page.locator("#approval-status")).to_have_attribute("data-status", "pending")
    expect(page.locator("pre#arguments-command")).to_have_text("make deploy")
    assert json.loads(page.input_value("#id_arguments")) == {"command": "make deploy"}


def back_on_queue(page: Any, session_id: str, message: str) -> None:
    """The redirect to the queue, with the success message and the row gone from pending."""
    from playwright.sync_api import expect

    page.wait_for_url("**/admin/approvals/approval/")
    expect(page.locator("ul.messagelist li.success")).to_contain_text(message)
    expect(page.locator("#result_list tbody tr").filter(has_text=session_id)).to_have_count(0)


def box_of(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not displayed"
    return dict(box)


def assert_within(inner: dict[str, float], outer: dict[str, float], what: str) -> None:
    assert inner["x"] >= outer["x"] and inner["y"] >= outer["y"], (what, inner, outer)
    assert inner["x"] + inner["width"] <= outer["x"] + outer["width"], (what, inner, outer)
    assert inner["y"] + inner["height"] <= outer["y"] + outer["height"], (what, inner, outer)


def assert_in_view(page: Any, selector: str) -> None:
    """The element is wholly inside the window, and the window was not scrolled to get there."""
    assert page.evaluate("() => [window.scrollX, window.scrollY]") == [0, 0]
    window: dict[str, float] = {"x": 0, "y": 0, **LAPTOP}
    assert_within(box_of(page, selector), window, selector)


def assert_no_sideways_scroll(page: Any) -> None:
    widths = page.evaluate(
        """() => {
            const results = document.querySelector("#changelist .results");
            const page = document.documentElement;
            return [results.scrollWidth, results.clientWidth, page.scrollWidth, page.clientWidth];
        }"""
    )
    table, box, document, window = widths
    assert table <= box, f"the queue is {table} px wide in a {box} px box: columns are clipped"
    assert document <= window, f"the page is {document} px wide in a {window} px window"


def audit_events(rest: httpx.Client, session_id: str, event_type: str) -> list[dict[str, Any]]:
    response = rest.get(
        "/events/audit-log", params={"session_id": session_id, "event_type": event_type}
    )
    assert response.status_code == 200, response.text
    return list(response.json()["audit_log"])


def assert_nothing_pending(rest: httpx.Client, session_id: str) -> None:
    response = rest.get(f"/sessions/{session_id}/pending-approvals")
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 0, response.json()


# --- the tests -------------------------------------------------------------------------------


def test_it_releases_a_staff_edited_command_to_the_ide(
    browser: Any,
    runtime: Runtime,
    fake: FakeLLM,
    page: Any,
    rest: httpx.Client,
    screenshots: Path,
) -> None:
    from playwright.sync_api import expect

    with daphne_log_on_failure(runtime):
        session_id = "browser-edit"
        fake.reset()
        ws = request_deploy(runtime, fake, rest, session_id)
        try:
            open_decide_page(page, session_id)
            shot = screenshots / "decide.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f"decide page screenshot: {shot}")

            page.click("#edit-arguments summary")
            page.fill("#id_arguments", json.dumps({"command": "make deploy-staging"}))
            page.click("#decide-edit")

            # Nothing goes to the IDE before the staff member has seen the change.
            expect(page.locator("#approval-edit-preview")).to_be_visible()
            expect(page.locator("#preview-diff [data-argument=command]")).to_contain_text(
                '"make deploy" → "make deploy-staging"'
            )
            expect(page.locator("#approval-status")).to_have_attribute("data-status", "pending")
            page.click("#decide-release")
            back_on_queue(
                page,
                session_id,
                f"Edited and released execute_command (call_1) in session {session_id}",
            )

            # The IDE gets the same call back, released with the staff member's arguments.
            chunks = read_turn(ws)
        finally:
            ws.close()
        call = chunks[-1]
        assert call["type"] == "tool_call", chunks
        assert call["call_id"] == "call_1"
        assert call["tool_name"] == "execute_command"
        assert call["requires_approval"] is False
        assert call["arguments"] == {"command": "make deploy-staging"}
        assert len(chunks) == 1, chunks

        assert_nothing_pending(rest, session_id)
        [decision] = audit_events(rest, session_id, "hitl_decision")
        assert decision["call_id"] == "call_1"
        assert decision["decision"] == "edited"
        assert decision["decided_by"] == f"staff:{USERNAME}"
        assert len(fake.requests) == 1  # an edit goes to the IDE, not back to the model


def test_it_lets_the_agent_answer_a_staff_rejection(
    browser: Any,
    runtime: Runtime,
    fake: FakeLLM,
    page: Any,
    rest: httpx.Client,
) -> None:
    with daphne_log_on_failure(runtime):
        session_id = "browser-reject"
        fake.reset()
        ws = request_deploy(runtime, fake, rest, session_id)
        fake.enqueue(fakellm.text("Understood, I will not deploy."))
        try:
            open_decide_page(page, session_id)
            page.fill("#id_feedback", "Not on a Friday.")
            page.click("#decide-reject")
            back_on_queue(
                page, session_id, f"Rejected execute_command (call_1) in session {session_id}"
            )

            # The rejection goes back to the model, whose next turn streams to the IDE.
            chunks = read_turn(ws)
        finally:
            ws.close()
        assert chunks[-1]["type"] == "assistant_message", chunks
        # The IDE user reads who rejected it and why, then the model's answer.
        assert chunks[0]["metadata"]["decision"]["decided_by"] == f"staff:{USERNAME}"
        assert "".join(c["token"] or "" for c in chunks) == (
            f"The execute_command call was rejected by staff:{USERNAME}: Not on a Friday.\n\n"
            "Understood, I will not deploy."
        )
        assert not [c for c in chunks if c["type"] in {"tool_call", "error"}], chunks

        assert len(fake.requests) == 2
        tool_results = [m for m in fake.requests[1]["messages"] if m["role"] == "tool"]
        assert [m["tool_call_id"] for m in tool_results] == ["call_1"]
        assert f"rejected by staff:{USERNAME}" in tool_results[0]["content"]
        assert "Not on a Friday." in tool_results[0]["content"]

        assert_nothing_pending(rest, session_id)
        [decision] = audit_events(rest, session_id, "hitl_decision")
        assert decision["decision"] == "rejected"
        assert decision["feedback"] == "Not on a Friday."


SESSION = "browser-console-a-session-with-a-rather-long-identifier-012345"  # 62 of 64
DOCUMENT = "".join(f"Line {n} of the design notes.\n" for n in range(1, 41))


def long_session_waiting_on_a_write(
    runtime: Runtime, fake: FakeLLM, rest: httpx.Client, session_id: str
) -> Any:
    """Four exchanges (eight messages), then a turn ending on a write_file waiting for a human."""
    start_session(rest, session_id)
    ws = ide_socket(runtime, session_id)
    try:
        for n in range(1, 5):
            fake.enqueue(
                fakellm.text(f"Answer {n}. " + "Here is what the code does, at length. " * 6)
            )
            ws.send(json.dumps({"type": "user_message", "content": f"Question {n} about the code"}))
            assert read_turn(ws)[-1]["type"] == "assistant_message"
        arguments = json.dumps({"path": "docs/design.md", "content": DOCUMENT})
        fake.enqueue(
            fakellm.tool_calls(
                [("call_w", "write_file", arguments)], text_before="I will write the notes down."
            )
        )
        ws.send(json.dumps({"type": "user_message", "content": "write the design notes"}))
        call = read_turn(ws)[-1]
        assert call["type"] == "tool_call" and call["requires_approval"] is True, call
    except BaseException:
        ws.close()
        raise
    return ws


def test_it_fits_the_console_to_a_laptop_screen(
    browser: Any,
    runtime: Runtime,
    fake: FakeLLM,
    laptop: Any,
    rest: httpx.Client,
    screenshots: Path,
) -> None:
    from playwright.sync_api import expect

    page = laptop
    with daphne_log_on_failure(runtime):
        fake.reset()
        ws = long_session_waiting_on_a_write(runtime, fake, rest, SESSION)
        try:
            # The index says how many calls wait, and leads to them.
            log_in(page, next_url="/admin/")
            pending = rest.get(f"/sessions/{SESSION}/pending-approvals").json()["count"]
            assert pending == 1
            banner = page.locator("#pending-approvals")
            expect(banner.locator(".badge")).to_have_text("1")
            expect(banner).to_contain_text("tool call waits for a decision")
            page.screenshot(path=str(screenshots / "index.png"))
            banner.get_by_role("link", name="Open the approval queue →").click()
            page.wait_for_url("**/admin/approvals/approval/?status=pending")

            # The queue: every column inside the window, no sideways scrolling.
            row = page.locator("#result_list tbody tr").filter(has_text=SESSION)
            expect(row).to_contain_text("docs/design.md (1151 chars)")
            assert_no_sideways_scroll(page)
            assert_within(
                box_of(page, "#result_list thead th:last-child"),
                box_of(page, "#changelist .results"),
                "the last column",
            )
            page.screenshot(path=str(screenshots / "queue.png"))

            # The decision page opens on the call: its arguments, the buttons, and the call in
            # the conversation, scrolled into its box, all without scrolling the page.
            row.get_by_role("link", name="Decide →").click()
            page.wait_for_url("**/decide/")
            expect(page.locator("#conversation li")).to_have_count(10)
            assert_in_view(page, "#approval-tool")
            assert_in_view(page, "#arguments-path")
            assert_in_view(page, "#decide-approve")
            assert_in_view(page, "#decide-reject")
            assert_in_view(page, "#conversation-this-call")
            assert_within(
                box_of(page, "#conversation-this-call"),
                box_of(page, "#conversation"),
                "the call in the conversation box",
            )
            expect(page.locator("#conversation-this-call")).to_contain_text("call_w")
            page.screenshot(path=str(screenshots / "decide.png"))

            # An edit of the file shows as a line diff before anything is released.
            edited = DOCUMENT.replace("Line 3 of", "Line three of") + "A last line.\n"
            page.click("#edit-arguments summary")
            page.fill("#id_arguments", json.dumps({"path": "docs/design.md", "content": edited}))
            page.click("#decide-edit")
            page.wait_for_selector("#approval-edit-preview")
            diff = page.locator("#preview-diff [data-argument=content] pre.diff span")
            expect(diff).to_have_text(
                [
                    "@@ -1,6 +1,6 @@",
                    " Line 1 of the design notes.",
                    " Line 2 of the design notes.",
                    "-Line 3 of the design notes.",
                    "+Line three of the design notes.",
                    " Line 4 of the design notes.",
                    " Line 5 of the design notes.",
                    " Line 6 of the design notes.",
                    "@@ -38,3 +38,4 @@",
                    " Line 38 of the design notes.",
                    " Line 39 of the design notes.",
                    " Line 40 of the design notes.",
                    "+A last line.",
                ]
            )
            expect(page.locator("#preview-diff .diff-unchanged")).to_have_text("Unchanged: path")
            assert_in_view(page, "#approval-edit-preview h2")
            assert_in_view(page, "#decide-release")
            assert_in_view(page, "#conversation-this-call")
            page.screenshot(path=str(screenshots / "preview.png"))
            page.click("#decide-release")
            back_on_queue(
                page, SESSION, f"Edited and released write_file (call_w) in session {SESSION}"
            )
            chunks = read_turn(ws)
        finally:
            ws.close()
        assert chunks[-1]["call_id"] == "call_w"
        assert chunks[-1]["arguments"] == {"path": "docs/design.md", "content": edited}

        # Every status together (the widest columns) still fits, and the decided edit's page
        # shows what changed.
        page.goto("/admin/approvals/approval/?status=all")
        row = page.locator("#result_list tbody tr").filter(has_text=SESSION)
        expect(row.locator("td.field-outcome")).to_contain_text(f"Edited by staff:{USERNAME}")
        assert_no_sideways_scroll(page)
        page.screenshot(path=str(screenshots / "queue-all.png"))
        row.get_by_role("link", name="write_file").click()
        expect(page.locator("#edit-diff [data-argument=content] .diff-add")).to_have_text(
            ["+Line three of the design notes.", "+A last line."]
        )
        page.screenshot(path=str(screenshots / "approval.png"), full_page=True)
        print(f"console screenshots: {screenshots}")
