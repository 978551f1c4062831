"""Who may open a session socket: the IDE's key from anywhere (no Origin needed), a staff login
only from a page of this server (cookies ride along cross-site: the Origin check is the socket's
CSRF protection)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client

from agent_runtime.routing import websocket_application
from sessions.services import session_create

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"testserver")


@sync_to_async
def login_cookie(*, is_staff: bool = True, may_view: bool = True) -> tuple[bytes, bytes]:
    session_create(session_id="s-1")
    user = User.objects.create_user("alice", is_staff=is_staff)
    if may_view:
        user.user_permissions.add(Permission.objects.get(codename="view_agentsession"))
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def close_code(headers: list[tuple[bytes, bytes]]) -> int | None:
    """None when the socket stays open; else the code it was closed with."""
    ws = WebsocketCommunicator(websocket_application, "/ws/s-1", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    try:
        if await ws.receive_nothing(0.3):
            return None
        closed: dict[str, Any] = await ws.receive_output(1)
        assert closed["type"] == "websocket.close"
        code: int = closed["code"]
        return code
    finally:
        await ws.disconnect()


async def test_a_staff_login_from_this_server_s_page_is_let_in():
    cookie = await login_cookie()
    assert await close_code([cookie, HOST, (b"origin", b"http://testserver")]) is None


@pytest.mark.parametrize(
    "origin",
    [
        None,  # a staff cookie without an Origin: not a browser on our page
        b"https://evil.example",  # another site's page using the staff member's cookie
        b"http://testserver.evil.example",
        b"null",
    ],
)
async def test_a_staff_login_from_anywhere_else_is_refused(origin):
    cookie = await login_cookie()
    headers = [cookie, HOST] + ([(b"origin", origin)] if origin else [])
    assert await close_code(headers) == 4401


async def test_a_trusted_origin_may_carry_a_staff_login(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.example"]
    cookie = await login_cookie()
    assert await close_code([cookie, HOST, (b"origin", b"https://console.example")]) is None


async def test_a_login_that_is_not_staff_is_refused():
    cookie = await login_cookie(is_staff=False)
    assert await close_code([cookie, HOST, (b"origin", b"http://testserver")]) == 4401


async def test_a_staff_login_the_admin_shows_no_session_is_refused():
    cookie = await login_cookie(may_view=False)
    assert await close_code([cookie, HOST, (b"origin", b"http://testserver")]) == 4401


async def test_the_key_needs_no_origin_and_ignores_any():
    await sync_to_async(session_create)(session_id="s-1")
    key = (b"x-internal-auth", settings.INTERNAL_API_KEY.encode())
    assert await close_code([key]) is None
    assert await close_code([key, HOST, (b"origin", b"https://evil.example")]) is None
    assert await close_code([(b"x-internal-auth", b"wrong"), HOST]) == 4401
