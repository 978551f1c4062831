"""Expiry on the embedded defaults (SQLite, in-memory channel layer, no task cluster needed):
the server process expires approvals itself, so the session's open socket hears of it."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests import fakellm
from tests.e2e.conftest import Api, start_runtime, text_of, user, ws_connect
from tests.e2e.server import Runtime

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runtime(request: pytest.FixtureRequest, sqlite_url: str, fake_llm_server: Any) -> Runtime:
    return start_runtime(
        request,
        database_url=sqlite_url,
        llm_url=fake_llm_server.url,
        extra_env={"APPROVAL_TTL_SECONDS": "1", "APPROVAL_EXPIRY_INTERVAL_SECONDS": "0.5"},
    )


async def test_an_expiry_reaches_the_open_socket_at_once(
    runtime: Runtime, http: httpx.AsyncClient, fake: Any
) -> None:
    session = await Api(runtime, http).new_session(agent="coder")
    fake.enqueue(
        fakellm.tool_calls([("w1", "write_file", '{"path": "a.py", "content": "x"}')]),
        fakellm.text("Nobody answered, so I left a.py alone."),
    )
    async with ws_connect(runtime, session) as socket:
        asked = await socket.turn(user("write a.py"))
        assert asked[-1]["type"] == "tool_call" and asked[-1]["requires_approval"] is True
        waited = time.monotonic()
        after = await socket.until_final(timeout=10)
    assert time.monotonic() - waited < 5  # the TTL (1 s) plus a tick (0.5 s), with room
    assert after[0]["metadata"]["decision"]["status"] == "expired"
    assert after[0]["metadata"]["decision"]["decided_by"] == "system"
    assert text_of(after).endswith("Nobody answered, so I left a.py alone.")
    assert "expired without a decision by system" in text_of(after)
