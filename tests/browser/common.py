"""What the browser tests share: Chromium's flags, the staff user, and the IDE's side (a
``websockets`` client with the key and no Origin) of a session the browser also looks at."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from tests.e2e.server import API_KEY, Runtime
from tests.ide_union import check_chunk

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


def log_in(page: Any, next_url: str = "/admin/approvals/approval/") -> None:
    page.goto(f"/admin/login/?next={next_url}")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form [type=submit]")
    page.wait_for_url(f"**{next_url}")
