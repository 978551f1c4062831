"""A staff member decides an approval in the admin while the IDE waits on its WebSocket.

Everything is real: daphne serving the runtime on a temporary SQLite database, the fake LLM
over HTTP, an IDE-side WebSocket (``X-Internal-Auth``, no Origin) and Debian's Chromium driven by
Playwright. Without Chromium the tests skip (``tests/browser/setup.sh`` installs it); in CI they
fail instead.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import fakellm
from tests.e2e.server import API_KEY, ROOT, Runtime
from tests.fakellm import FakeLLM
from tests.ide_union import check_chunk
from tests.services import require

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium's own connections are refused on a closed
# network and it stalls; the rest keep it quiet and headless on a CI box.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000  # page waits: generous, a loaded 2-core machine is slow
WS_TIMEOUT = 15.0
LAPTOP = {"width": 1366, "height": 768}
USERNAME, PASSWORD = "alice", "correct-horse-battery-staple"
AUTH = {"X-Internal-Auth": API_KEY}

CREATE_STAFF = f"""
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
user = get_user_model().objects.create_user({USERNAME!r}, password={PASSWORD!r}, is_staff=True)
user.user_permissions.add(
    Permission.objects.get(content_type__app_label="approvals", codename="decide_approval")
)
"""


# --- fixtures: the browser first, so a missing Chromium skips before daphne starts ----------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        require(
            f"Chromium is not installed at {CHROMIUM} "
            "(run tests/browser/setup.sh as root, or apt-get install chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        require(f"the playwright package is not installed: {exc}")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
    except Exception as exc:
        playwright.stop()
        require(f"Playwright cannot launch {CHROMIUM}: {str(exc).splitlines()[0]}")
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runtime(
    browser: Any, fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    database = tmp_path_factory.mktemp("staff-console") / "runtime.sqlite3"
    server = Runtime(database_url=f"sqlite:///{database}", llm_url=fake.url, name="browser")
    try:
        server.start()
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", CREATE_STAFF],
            cwd=ROOT,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"creating the staff user failed:\n{done.stderr[-3000:]}"
        yield server
    finally:
        server.close()


@pytest.fixture
def page(browser: Any, runtime: Runtime) -> Iterator[Any]:
    context = browser.new_context(base_url=runtime.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def laptop(browser: Any, runtime: Runtime) -> Iterator[Any]:
    """A page the size of a common staff laptop screen, where the console must work unscrolled."""
    context = browser.new_context(base_url=runtime.url, viewport=LAPTOP)
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def rest(runtime: Runtime) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=runtime.url, headers=AUTH, timeout=15.0, trust_env=False) as c:
        yield c


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # pytest's temp root (kept for the last few runs), never the work tree.
    return tmp_path_factory.mktemp("screenshots")


# --- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def daphne_log_on_failure(runtime: Runtime) -> Iterator[None]:
    """Attach what daphne logged to any failure inside (pytest prints exception notes)."""
    try:
        yield
    except BaseException as exc:
        exc.add_note(f"--- daphne log ({runtime.log_path}):\n{runtime.log_tail()}")
        raise


def start_session(rest: httpx.Client, session_id: str) -> None:
    response = rest.post("/sessions", json={"session_id": session_id})
    assert response.status_code == 201, response.text
    response = rest.post(
        f"/agents/{session_id}/switch", json={"target_agent": "coder", "reason": "browser test"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["context"]["current_agent"] == "coder"


def ide_socket(runtime: Runtime, session_id: str) -> Any:
    from websockets.sync.client import connect

    # An IDE: internal key, no Origin header, no proxy from the environment.
    return connect(
        f"{runtime.ws_url}/ws/{session_id}",
        additional_headers=AUTH,
        open_timeout=WS_TIMEOUT,
        proxy=None,
    )


def read_turn(ws: Any, *, timeout: float = WS_TIMEOUT) -> list[dict[str, Any]]:
    """Chunks up to and including the next ``is_final`` one."""
    chunks: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no final chunk within {timeout:.0f} s; got {chunks}")
        try:
            frame = ws.recv(timeout=remaining)
        except TimeoutError:
            raise AssertionError(f"no final chunk within {timeout:.0f} s; got {chunks}") from None
        chunk = check_chunk(json.loads(frame))  # the IDE decodes it: no other chunk types
        chunks.append(chunk)
        if chunk.get("is_final"):
            return chunks


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


def log_in(page: Any, next_url: str = "/admin/approvals/approval/") -> None:
    page.goto(f"/admin/login/?next={next_url}")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form [type=submit]")
    page.wait_for_url(f"**{next_url}")


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
