"""The session WebSocket: auth, chunks to every socket of a session, errors, cancel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings

from agent_runtime.routing import websocket_application
from agents.models import AgentContext
from approvals.models import Approval
from approvals.services import approval_decide
from sessions.models import AgentSession, Message
from sessions.services import session_create
from tests import fakellm, ide_union
from tests.history import text_of
from tests.ide_union import check_chunk
from tests.services import require_redis

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def new_session(session_id: str = "w1", agent: str = "coder") -> None:
    session_create(session_id=session_id)
    AgentContext.objects.filter(session_id=session_id).update(current_agent=agent)


def socket(
    session_id: str = "w1", *, key: str | None = None, path: str = "/ws/"
) -> WebsocketCommunicator:
    headers = [(b"x-internal-auth", (key or settings.INTERNAL_API_KEY).encode())]
    return WebsocketCommunicator(websocket_application, f"{path}{session_id}", headers=headers)


async def chunk_from(ws: WebsocketCommunicator, timeout: float = 5) -> dict[str, Any]:
    """The socket's next frame, which the IDE must be able to decode."""
    return check_chunk(json.loads(await ws.receive_from(timeout)))


async def receive_turn(ws: WebsocketCommunicator, timeout: float = 5) -> list[dict[str, Any]]:
    chunks = []
    while True:
        chunk = await chunk_from(ws, timeout)
        chunks.append(chunk)
        if chunk["is_final"]:
            return chunks


@pytest.mark.parametrize("path", ["/ws/", "/api/v1/ws/"])
async def test_it_streams_a_turn_to_the_socket(llm, path):
    await new_session()
    llm.enqueue(fakellm.text("Hello from the socket."))
    ws = socket(path=path)
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "user_message", "content": "hi"})
    chunks = await receive_turn(ws)
    assert text_of(chunks) == "Hello from the socket."
    assert chunks[-1]["type"] == "assistant_message" and chunks[-1]["is_final"] is True
    await ws.disconnect()


async def test_every_socket_of_a_session_sees_the_chunks(llm):
    await new_session()
    llm.enqueue(fakellm.tool_calls([("c1", "read_file", '{"path": "a.py"}')]))
    sender, watcher = socket(), socket()
    assert (await sender.connect())[0] and (await watcher.connect())[0]
    await sender.send_json_to({"type": "user_message", "content": "read a.py"})
    for ws in (sender, watcher):
        chunks = await receive_turn(ws)
        assert chunks[-1]["type"] == "tool_call" and chunks[-1]["call_id"] == "c1"
    await sender.disconnect()
    await watcher.disconnect()


async def test_a_bad_frame_gets_an_error_only_on_its_socket(llm):
    await new_session()
    sender, watcher = socket(), socket()
    await sender.connect()
    await watcher.connect()
    for frame, status in [
        ({"type": "shout"}, 400),
        ({"type": "tool_result"}, 400),
        ({"type": "tool_result", "call_id": "x"}, 404),
    ]:
        await sender.send_json_to(frame)
        error = await chunk_from(sender)
        assert error["type"] == "error" and error["is_final"] is True
        assert error["content"] == error["error"]
        # What it stands for, as over SSE (PROTOCOL §3).
        assert error["metadata"]["status"] == status
        assert error["metadata"]["code"] == {400: "bad_request", 404: "not_found"}[status]
    await sender.send_to(text_data="{not json")
    assert "malformed JSON" in (await chunk_from(sender))["error"]
    assert await watcher.receive_nothing(0.2)
    await sender.disconnect()
    await watcher.disconnect()


async def refused_with(ws: WebsocketCommunicator) -> int:
    """The close code of a socket refused after its handshake (so the client can read it)."""
    connected, _ = await ws.connect()
    assert connected  # a close before accept() would be an HTTP 403 saying neither reason
    closed = await ws.receive_output(5)
    assert closed["type"] == "websocket.close"
    code: int = closed["code"]
    return code


@pytest.mark.parametrize(
    ("session_id", "key", "code"),
    [("w1", "wrong", 4401), ("missing", None, 4404)],
)
async def test_it_refuses_bad_connections(llm, session_id, key, code):
    await new_session()
    assert await refused_with(socket(session_id, key=key)) == code


async def test_it_refuses_a_staff_cookie_without_an_origin(llm):
    await new_session()
    ws = WebsocketCommunicator(websocket_application, "/ws/w1")  # no key, no cookie, no origin
    assert await refused_with(ws) == 4401


@pytest.mark.parametrize(
    "path", ["/ws/", "/ws", "/ws/w1/extra", "/api/v1/ws/", "/api/v1/ws/w1/x", "/", "/nope"]
)
async def test_it_closes_an_unknown_path_with_4404(path):
    # Channels' router raised "No route found" for these: a traceback and a failed handshake.
    headers = [(b"x-internal-auth", settings.INTERNAL_API_KEY.encode())]
    assert await refused_with(WebsocketCommunicator(websocket_application, path, headers)) == 4404


async def test_a_binary_frame_gets_an_error_and_the_socket_lives(llm):
    await new_session()
    ws = socket()
    assert (await ws.connect())[0]
    await ws.send_to(bytes_data=b'{"type": "user_message", "content": "hi"}')
    error = await chunk_from(ws)
    assert tuple(error) == ide_union.KEYS
    assert error["type"] == "error" and error["is_final"] is True
    assert "binary" in error["error"] and error["content"] == error["error"]
    # An empty text frame is malformed JSON, not a crash (the communicator cannot send one).
    await ws.send_input({"type": "websocket.receive", "text": ""})
    assert "malformed JSON" in (await chunk_from(ws))["error"]
    llm.enqueue(fakellm.text("still here"))
    await ws.send_json_to({"type": "user_message", "content": "hi"})
    assert text_of(await receive_turn(ws)) == "still here"
    await ws.disconnect()


async def test_a_refused_socket_ignores_frames_sent_before_its_close(llm):
    await new_session()
    ws = socket(key="wrong")
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "user_message", "content": "hi"})
    assert (await ws.receive_output(5)) == {"type": "websocket.close", "code": 4401}
    assert await ws.receive_nothing(0.2)
    assert await user_messages("w1") == []


async def test_cancel_stops_the_running_turn(llm):
    await new_session()
    llm.enqueue(fakellm.text("one two three four five six seven eight nine", delay=0.2))
    ws = socket()
    await ws.connect()
    await ws.send_json_to({"type": "user_message", "content": "hi"})
    first = await chunk_from(ws)
    assert first["type"] == "assistant_message"
    await ws.send_json_to({"type": "cancel"})
    rest = await receive_turn(ws)
    assert rest[-1]["type"] == "error" and "cancelled" in rest[-1]["error"]
    await asyncio.sleep(0.1)
    row = await sync_to_async(AgentSession.objects.get)(pk="w1")
    assert row.turn_owner == ""
    # mypy matches list's no-argument constructor overload through sync_to_async's ParamSpec.
    roles: list[str] = await sync_to_async(list)(  # type: ignore[call-arg]
        Message.objects.filter(session_id="w1").values_list("role", flat=True)
    )
    assert roles[0] == "user"  # what streamed before the cancel is kept (or nothing)
    await ws.send_json_to({"type": "cancel"})
    assert "No turn" in (await chunk_from(ws))["error"]
    await ws.disconnect()


def decide_like_the_admin(*, decision: str, **kwargs: Any) -> None:
    """What the staff console does, from a sync thread: decide; the service continues the
    session by itself."""
    approval_decide(
        session_id="w1",
        call_id="e1",
        decision=decision,
        decided_by_kind=Approval.DeciderKind.STAFF,
        decided_by="staff:alice",
        **kwargs,
    )


@pytest.mark.parametrize("decision", ["approve", "edit", "reject"])
async def test_a_staff_decision_reaches_the_connected_socket(llm, decision):
    await new_session()
    llm.enqueue(
        fakellm.tool_calls([("e1", "execute_command", '{"command": "make deploy"}')]),
        fakellm.text("Alright, I will not deploy."),
    )
    ws = socket()
    await ws.connect()
    await ws.send_json_to({"type": "user_message", "content": "deploy"})
    asked = await receive_turn(ws)
    assert asked[-1]["requires_approval"] is True
    edited = {"command": "make deploy-staging"}
    extra = {"modified_arguments": edited} if decision == "edit" else {}
    await sync_to_async(decide_like_the_admin)(decision=decision, feedback="not today", **extra)
    chunks = await receive_turn(ws)
    if decision == "reject":
        assert text_of(chunks) == (
            "The execute_command call was rejected by staff:alice: not today\n\n"
            "Alright, I will not deploy."
        )
        content = await sync_to_async(
            lambda: Message.objects.filter(session_id="w1", role="tool").get().content
        )()
        assert content == "The execute_command call was rejected by staff:alice: not today"
    else:
        (call,) = chunks
        assert call["type"] == "tool_call" and call["call_id"] == "e1"
        assert call["requires_approval"] is False
        assert call["arguments"] == (edited if decision == "edit" else {"command": "make deploy"})
    await ws.disconnect()


@pytest.fixture
def redis_layer(settings: Any) -> Any:
    url = require_redis()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [url], "prefix": "agent-runtime-test"},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def test_it_works_over_the_redis_channel_layer(llm, redis_layer):
    from channels_redis.core import RedisChannelLayer

    assert isinstance(channel_layers["default"], RedisChannelLayer)
    await new_session()
    llm.enqueue(fakellm.text("Through Redis."))
    sender, watcher = socket(), socket()
    await sender.connect()
    await watcher.connect()
    await sender.send_json_to({"type": "user_message", "content": "hi"})
    for ws in (sender, watcher):
        assert text_of(await receive_turn(ws)) == "Through Redis."
    await sender.disconnect()
    await watcher.disconnect()


@sync_to_async
def user_messages(session_id: str) -> list[str]:
    rows = Message.objects.filter(session_id=session_id, role="user").order_by("seq")
    return list(rows.values_list("content", flat=True))


@sync_to_async
def staff_cookie(*, may_decide: bool) -> list[tuple[bytes, bytes]]:
    """Headers of a logged-in staff member's browser on this server's own page."""
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    user = User.objects.create_user("alice" if may_decide else "bob", is_staff=True)
    # Without the decide permission: one who may view sessions in the admin, and so watch.
    codename = "decide_approval" if may_decide else "view_agentsession"
    user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    return [(b"cookie", cookie), (b"origin", b"http://testserver"), (b"host", b"testserver")]


async def ask_for_approval(llm: Any) -> WebsocketCommunicator:
    llm.enqueue(fakellm.tool_calls([("e1", "execute_command", '{"command": "make deploy"}')]))
    ide = socket()
    await ide.connect()
    await ide.send_json_to({"type": "user_message", "content": "deploy"})
    assert (await receive_turn(ide))[-1]["requires_approval"] is True
    return ide


async def test_staff_without_the_permission_may_only_watch(llm):
    await new_session()
    ide = await ask_for_approval(llm)
    watcher = WebsocketCommunicator(
        websocket_application, "/ws/w1", headers=await staff_cookie(may_decide=False)
    )
    assert (await watcher.connect())[0]
    await watcher.send_json_to({"type": "hitl_decision", "call_id": "e1", "decision": "approve"})
    error = await chunk_from(watcher)
    assert error["type"] == "error" and "may only watch" in error["error"]
    approval = await sync_to_async(Approval.objects.get)(call_id="e1")
    assert approval.status == "pending"
    await watcher.disconnect()
    await ide.disconnect()


async def test_a_staff_decision_over_the_socket_is_recorded_as_theirs(llm):
    await new_session()
    ide = await ask_for_approval(llm)
    staff = WebsocketCommunicator(
        websocket_application, "/ws/w1", headers=await staff_cookie(may_decide=True)
    )
    assert (await staff.connect())[0]
    await staff.send_json_to({"type": "hitl_decision", "call_id": "e1", "decision": "approve"})
    (call,) = await receive_turn(ide)
    assert call["call_id"] == "e1" and call["requires_approval"] is False
    approval = await sync_to_async(Approval.objects.select_related("decided_by_user").get)(
        call_id="e1"
    )
    assert approval.decided_by == "staff:alice" and approval.decided_by_kind == "staff"
    assert approval.decided_by_user is not None
    await staff.disconnect()
    await ide.disconnect()


async def test_frames_sent_back_to_back_run_in_order(llm):
    await new_session()
    # A long first turn, then two frames 60 ms apart: left to poll for the session's lease on
    # their own, the later one would often get it first.
    llm.enqueue(
        fakellm.text("a b c d e f g", delay=0.05), fakellm.text("second"), fakellm.text("third")
    )
    ws = socket()
    await ws.connect()
    await ws.send_json_to({"type": "user_message", "content": "message 0"})
    await asyncio.sleep(0.01)
    await ws.send_json_to({"type": "user_message", "content": "message 1"})
    await asyncio.sleep(0.06)
    await ws.send_json_to({"type": "user_message", "content": "message 2"})
    for _ in range(3):
        await receive_turn(ws)
    contents = await user_messages("w1")
    assert contents == ["message 0", "message 1", "message 2"]
    await ws.disconnect()


async def test_a_deeply_nested_frame_gets_an_error_and_the_socket_lives(llm):
    await new_session()
    ws = socket()
    await ws.connect()
    await ws.send_to(text_data="[" * 100_000 + "]" * 100_000)
    error = await chunk_from(ws)
    assert error["type"] == "error" and "malformed JSON" in error["error"]
    llm.enqueue(fakellm.text("still here"))
    await ws.send_json_to({"type": "user_message", "content": "hi"})
    assert text_of(await receive_turn(ws)) == "still here"
    await ws.disconnect()


async def test_a_reconnecting_ide_can_ask_for_calls_released_while_it_was_away(llm):
    await new_session()
    ide = await ask_for_approval(llm)  # execute_command e1 waits for a human
    await ide.disconnect()
    await sync_to_async(decide_like_the_admin)(decision="approve")  # nobody is connected
    plain = socket()
    assert (await plain.connect())[0]
    assert await plain.receive_nothing(0.2)  # no replay unless asked: never run a call twice
    await plain.disconnect()
    replaying = WebsocketCommunicator(
        websocket_application,
        "/ws/w1?replay=outstanding",
        headers=[(b"x-internal-auth", settings.INTERNAL_API_KEY.encode())],
    )
    assert (await replaying.connect())[0]
    (call,) = [await chunk_from(replaying)]
    assert call["type"] == "tool_call" and call["call_id"] == "e1"
    assert call["requires_approval"] is False and call["is_final"] is True
    assert await replaying.receive_nothing(0.1)
    await replaying.disconnect()
