"""The stream endpoint as daphne serves it: agent_runtime/direct.py, outside Django's stack.

The test client goes through Django's handler; these drive the view as ``agent_runtime/asgi.py``
mounts it (``DirectView(message_stream)``), so the direct path's own checks (key, size, Host,
method, a crash) answer as the full stack would. The e2e suite streams every turn through it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.conf import settings

from agent_runtime.direct import DirectView
from agents.views import message_stream
from sessions.services import session_create
from tests.conftest import parse_sse

pytestmark = pytest.mark.django_db(transaction=True)
application = DirectView(message_stream)

PATH = "/agent/message/stream"


def _headers(key: str | None = None, host: str = "testserver") -> list[tuple[bytes, bytes]]:
    headers = [(b"host", host.encode()), (b"content-type", b"application/json")]
    if key is not None:
        headers.append((b"x-internal-auth", key.encode()))
    return headers


async def _call(
    method: str = "POST", body: bytes = b"{}", key: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    key = settings.INTERNAL_API_KEY if key is None else key
    communicator = HttpCommunicator(
        application, method, PATH, body=body, headers=_headers(key, **kwargs)
    )
    response: dict[str, Any] = dict(await communicator.get_response(timeout=10))
    is_json = response["body"].startswith(b"{")
    response["json"] = json.loads(response["body"]) if is_json else None
    response["header"] = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    return response


async def test_it_refuses_a_missing_or_wrong_key():
    for key in ("", "wrong"):
        response = await _call(key=key)
        assert response["status"] == 401
        assert response["json"] == {"detail": "unauthorized"}


async def test_it_refuses_a_body_over_the_limit_without_reading_on(settings):
    settings.MAX_REQUEST_BYTES = 100
    response = await _call(body=b'{"x": "' + b"a" * 200 + b'"}')
    assert response["status"] == 413
    assert "limit 100 bytes" in response["json"]["detail"]


async def test_it_refuses_a_host_not_allowed():
    response = await _call(host="evil.example")
    assert response["status"] == 400
    assert response["json"] == {
        "detail": "bad request: the Host header is not one this server serves"
    }


async def test_it_answers_other_methods_with_405_and_allow():
    response = await _call(method="GET", body=b"")
    assert response["status"] == 405
    assert response["header"]["allow"] == "POST"
    assert "detail" in response["json"]


async def test_it_answers_malformed_json_with_400():
    response = await _call(body=b"{not json")
    assert response["status"] == 400
    assert response["json"]["detail"].startswith("malformed JSON body")
    assert response["header"]["x-content-type-options"] == "nosniff"


async def test_it_streams_a_turn_with_the_stream_headers():
    await database_sync_to_async(session_create)(session_id="direct-1")
    body = {"session_id": "direct-1", "message": {"type": "switch_agent", "agent_type": "coder"}}
    response = await _call(body=json.dumps(body).encode())

    assert response["status"] == 200
    assert response["header"]["content-type"] == "text/event-stream"
    assert response["header"]["cache-control"] == "no-cache"
    chunks = parse_sse(response["body"])
    assert chunks[-1]["type"] == "agent_switched" and chunks[-1]["is_final"] is True


async def test_it_answers_a_crashing_view_with_a_json_500(caplog):
    async def crash(request: Any) -> Any:
        raise RuntimeError("boom")

    communicator = HttpCommunicator(
        DirectView(crash), "POST", PATH, body=b"{}", headers=_headers(settings.INTERNAL_API_KEY)
    )
    response = await communicator.get_response(timeout=10)

    assert response["status"] == 500
    assert json.loads(response["body"]) == {"detail": "internal server error"}
    assert "boom" in caplog.text
