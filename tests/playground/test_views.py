"""The playground's pages: staff only, sessions listed and started, history escaped, the
socket the page opens gated by the same permission as the admin's decisions."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client

from agent_runtime.routing import websocket_application
from agents.models import AgentContext, AgentSwitch
from approvals.models import Approval
from sessions.models import AgentSession
from sessions.services import message_append, session_create
from tests.approvals.test_admin import make_approval

PAGE = "/playground/"
LOGIN = "/admin/login/"


def staff(username: str = "alice", *, may_decide: bool = True, may_view: bool = True) -> Client:
    """A logged-in staff member who may decide approvals, or (not may_decide) view sessions
    only, or (neither) do nothing with sessions in the admin."""
    user = User.objects.create_user(username, password="pw", is_staff=True)
    if may_decide:
        user.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    elif may_view:
        user.user_permissions.add(Permission.objects.get(codename="view_agentsession"))
    client = Client()
    client.force_login(user)
    return client


def page_config(response: Any) -> dict[str, Any]:
    """What the page hands playground.js (the json_script block)."""
    found = re.search(
        r'<script id="playground-config" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert found, "the page carries no playground-config"
    config: dict[str, Any] = json.loads(found.group(1))
    return config


# --- who gets in --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", [PAGE, f"{PAGE}s-1/"])
def test_it_sends_a_visitor_to_the_admin_login(client, path):
    session_create(session_id="s-1")
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next={path}"


@pytest.mark.django_db
def test_it_sends_a_user_who_is_not_staff_to_the_admin_login(client):
    client.force_login(User.objects.create_user("mallory", password="pw"))
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN)
    response = client.post(PAGE, {"session_id": "sneaky", "agent": "coder"})
    assert response.status_code == 302
    assert not AgentSession.objects.filter(pk="sneaky").exists()


@pytest.mark.django_db
def test_staff_the_admin_shows_no_session_are_refused():
    session_create(session_id="s-1")
    client = staff("carol", may_decide=False, may_view=False)
    for path in (PAGE, f"{PAGE}s-1/"):
        response = client.get(path)
        assert response.status_code == 403
        assert "permission to view sessions" in response.json()["detail"]
    assert client.post(PAGE, {"session_id": "x", "agent": "coder"}).status_code == 403
    assert not AgentSession.objects.filter(pk="x").exists()


@pytest.mark.django_db
def test_it_needs_no_api_key_and_never_shows_it():
    session_create(session_id="s-1")
    client = staff()
    for path in (PAGE, f"{PAGE}s-1/"):
        response = client.get(path)
        assert response.status_code == 200
        assert settings.INTERNAL_API_KEY not in response.content.decode()


@pytest.mark.django_db
def test_the_admin_links_to_it():
    client = staff()
    index = client.get("/admin/").content.decode()
    assert 'id="playground-intro"' in index
    assert f'href="{PAGE}"' in index
    queue = client.get("/admin/approvals/approval/").content.decode()
    assert f'<a id="playground-link" href="{PAGE}">Playground</a>' in queue


# --- picking and starting sessions --------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_the_latest_sessions():
    session_create(session_id="older", title="An older one")
    session_create(session_id="newer")
    html = staff().get(PAGE).content.decode()
    assert html.index(f'href="{PAGE}newer/"') < html.index(f'href="{PAGE}older/"')
    assert "An older one" in html
    assert 'id="playground-config"' not in html  # no session open: no socket either


@pytest.mark.django_db
def test_it_starts_a_session_with_the_chosen_agent():
    response = staff().post(PAGE, {"session_id": "pg-1", "title": "Try it", "agent": "coder"})
    assert response.status_code == 302
    assert response["Location"] == f"{PAGE}pg-1/"
    session = AgentSession.objects.get(pk="pg-1")
    assert session.title == "Try it"
    assert AgentContext.objects.get(session=session).current_agent == "coder"
    [switch] = AgentSwitch.objects.filter(context__session=session)
    assert (switch.from_agent, switch.to_agent) == ("orchestrator", "coder")
    assert (switch.reason, switch.confidence) == ("User requested", "high")


@pytest.mark.django_db
def test_it_starts_a_routed_session_with_a_generated_id():
    response = staff().post(PAGE, {"session_id": "", "title": "", "agent": "orchestrator"})
    assert response.status_code == 302
    session = AgentSession.objects.get()
    assert response["Location"] == f"{PAGE}{session.pk}/"
    assert len(session.pk) == 36  # a UUID
    assert AgentContext.objects.get(session=session).current_agent == "orchestrator"
    assert not AgentSwitch.objects.exists()


@pytest.mark.django_db
def test_it_offers_only_the_universal_agent_in_single_agent_mode(settings):
    settings.MULTI_AGENT_MODE = False
    client = staff()
    html = client.get(PAGE).content.decode()
    assert '<option value="universal"' in html
    assert '<option value="coder"' not in html
    assert "Single-agent mode" in html
    response = client.post(PAGE, {"session_id": "solo", "agent": "coder"})
    assert response.status_code == 200  # not a choice in this mode
    assert not AgentSession.objects.filter(pk="solo").exists()
    response = client.post(PAGE, {"session_id": "solo", "agent": "universal"})
    assert response.status_code == 302
    assert AgentContext.objects.get(session_id="solo").current_agent == "universal"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("session_id", "error"),
    [("taken", "session &#x27;taken&#x27; already exists"), ("no spaces", "1-64 characters")],
)
def test_it_refuses_a_session_it_cannot_start(session_id, error):
    session_create(session_id="taken", title="the first")
    response = staff().post(PAGE, {"session_id": session_id, "agent": "coder"})
    assert response.status_code == 200
    assert error in response.content.decode()
    assert AgentSession.objects.count() == 1
    assert AgentSession.objects.get().title == "the first"


@pytest.mark.django_db
def test_it_sends_an_unknown_session_back_to_the_list():
    client = staff()
    response = client.get(f"{PAGE}nope/", follow=True)
    assert response.redirect_chain == [(PAGE, 302)]
    assert "Session &#x27;nope&#x27; not found" in response.content.decode()


# --- one session's page -------------------------------------------------------------------


@pytest.mark.django_db
def test_it_draws_the_history_escaped():
    session_create(session_id="s-1")
    message_append(session="s-1", role="user", content="<script>alert('user')</script>")
    message_append(
        session="s-1",
        role="assistant",
        content="<img src=x onerror=alert(1)>",
        tool_calls=[
            {
                "id": "c<1>",
                "type": "function",
                "function": {"name": "read_file", "arguments": '{"path": "</pre><b>x"}'},
            }
        ],
        agent="coder",
    )
    message_append(session="s-1", role="tool", content="<b>bold?</b>", tool_call_id="c<1>")
    html = staff().get(f"{PAGE}s-1/").content.decode()
    log = html[html.index('<ol id="chat-log"') : html.index("</ol>", html.index("chat-log"))]
    assert "<script>" not in log and "<img" not in log and "<b>" not in log
    assert "&lt;script&gt;alert(&#x27;user&#x27;)&lt;/script&gt;" in log
    assert "&lt;img src=x onerror=alert(1)&gt;" in log
    assert "&quot;path&quot;: &quot;&lt;/pre&gt;&lt;b&gt;x&quot;" in log
    assert "&lt;b&gt;bold?&lt;/b&gt;" in log


@pytest.mark.django_db
def test_it_hands_the_script_the_session_socket():
    session_create(session_id="a:b.c-1")
    response = staff().get(f"{PAGE}a:b.c-1/")
    assert page_config(response) == {
        "session_id": "a:b.c-1",
        "socket_path": "/ws/a%3Ab.c-1?replay=outstanding",
        "can_act": True,
        "agents": ["orchestrator", "coder", "architect", "debug", "ask"],
        "read_only_tools": ["list_files", "read_file", "search_in_code"],
    }
    html = response.content.decode()
    assert 'id="composer"' in html
    assert "/static/playground/playground.js" in html


@pytest.mark.django_db
def test_staff_without_the_decide_permission_get_a_page_that_only_watches():
    session_create(session_id="s-1")
    response = staff("bob", may_decide=False).get(f"{PAGE}s-1/")
    assert response.status_code == 200
    assert page_config(response)["can_act"] is False
    html = response.content.decode()
    assert 'id="composer"' not in html
    assert 'id="new-session"' not in html
    assert 'id="watch-only"' in html


@pytest.mark.django_db
def test_staff_who_may_only_watch_cannot_start_a_session():
    client = staff("bob", may_decide=False)
    response = client.post(PAGE, {"session_id": "bobs", "agent": "coder"})
    assert response.status_code == 403
    assert "decide approvals" in response.json()["detail"]
    assert not AgentSession.objects.filter(pk="bobs").exists()


# --- the page's socket: the same gate as the admin's decisions ----------------------------


@sync_to_async
def open_page(session_id: str, *, may_decide: bool) -> tuple[str, list[tuple[bytes, bytes]]]:
    """Log in, load the page; the socket path it gives its script and the browser's headers."""
    client = staff("alice" if may_decide else "bob", may_decide=may_decide)
    response = client.get(f"{PAGE}{session_id}/")
    assert response.status_code == 200
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"cookie", cookie), (b"origin", b"http://testserver"), (b"host", b"testserver")]
    return page_config(response)["socket_path"], headers


@sync_to_async
def pending_write() -> Approval:
    return make_approval("s-1", call_id="c1")


async def next_chunk(ws: WebsocketCommunicator) -> dict[str, Any]:
    chunk: dict[str, Any] = json.loads(await ws.receive_from(5))
    return chunk


async def page_socket(*, may_decide: bool) -> WebsocketCommunicator:
    """The socket the page of session s-1 opens, once it has shown the held call c1."""
    path, headers = await open_page("s-1", may_decide=may_decide)
    ws = WebsocketCommunicator(websocket_application, path, headers=headers)
    assert (await ws.connect())[0]
    replayed = await next_chunk(ws)  # replay=outstanding: the call waiting on a human
    assert (replayed["type"], replayed["call_id"]) == ("tool_call", "c1")
    assert replayed["requires_approval"] is True
    return ws


@pytest.mark.django_db(transaction=True)
async def test_a_staff_member_without_the_permission_cannot_decide_from_the_page():
    approval = await pending_write()
    ws = await page_socket(may_decide=False)  # the page sees the held call...
    await ws.send_json_to({"type": "hitl_decision", "call_id": "c1", "decision": "approve"})
    refused = await next_chunk(ws)  # ...but may not decide it
    assert refused["type"] == "error"
    assert "approvals.decide_approval" in refused["error"]
    await approval.arefresh_from_db()
    assert approval.status == Approval.Status.PENDING
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_staff_member_with_the_permission_decides_from_the_page_in_their_name():
    approval = await pending_write()
    ws = await page_socket(may_decide=True)
    await ws.send_json_to(
        {"type": "hitl_decision", "call_id": "c1", "decision": "reject", "feedback": "no"}
    )
    await ws.receive_from(5)  # the session goes on (the model's answer to the rejection)
    await approval.arefresh_from_db()
    assert approval.status == Approval.Status.REJECTED
    assert approval.decided_by == "staff:alice"
    assert approval.decided_by_kind == Approval.DeciderKind.STAFF
    await ws.disconnect()
