"""The staff console's read-only pages: sessions, audit log, LLM usage, agents, tool calls."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from agents.models import AgentContext, ToolCall
from agents.services import agent_switch
from sessions import admin as sessions_admin
from sessions.models import AgentSession, AuditEvent, LLMRequest, Message
from sessions.services import session_delete

pytestmark = pytest.mark.django_db

SESSIONS = "/admin/agent_sessions/agentsession/"


@pytest.fixture
def root(client: Any) -> Any:
    client.force_login(User.objects.create_superuser("root", password="pw"))
    return client


def listed(response: Any) -> list[Any]:
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_it_lists_sessions_with_their_agent_in_a_fixed_number_of_queries(
    root, make_session, django_assert_max_num_queries
):
    for i in range(3):
        agent_switch(session=make_session(f"s-{i}", messages=2), to_agent="coder")
    with django_assert_max_num_queries(12) as queries:
        response = root.get(SESSIONS)
    few = len(queries)
    for i in range(3, 10):
        make_session(f"s-{i}")
    with django_assert_max_num_queries(few):
        response = root.get(SESSIONS)

    assert len(listed(response)) == 10
    html = response.content.decode()
    assert "agent-runtime staff console" in html
    assert '<td class="field-current_agent">coder</td>' in html
    assert '<td class="field-message_count">2</td>' in html


def test_it_filters_and_searches_sessions(root, make_session):
    make_session("live-1", title="fix the parser")
    gone = make_session("gone-1")
    session_delete(session=gone)
    make_session("idle-1")
    AgentSession.objects.filter(pk="idle-1").update(is_active=False)

    def ids(query: str) -> set[str]:
        return {s.pk for s in listed(root.get(SESSIONS + query))}

    assert ids("") == {"live-1", "gone-1", "idle-1"}
    assert ids("?deleted=yes") == {"gone-1"}
    assert ids("?deleted=no") == {"live-1", "idle-1"}
    assert ids("?is_active__exact=0") == {"gone-1", "idle-1"}
    assert ids("?q=parser") == {"live-1"}
    assert ids("?q=idle-1") == {"idle-1"}


def test_it_shows_a_session_read_only_with_its_latest_messages(root, make_session, monkeypatch):
    monkeypatch.setattr(sessions_admin, "INLINE_MESSAGES", 3)
    session = make_session("s-1", messages=5)
    Message.objects.filter(session=session, seq=5).update(
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "read_file"}}]
    )
    url = reverse("admin:agent_sessions_agentsession_change", args=["s-1"])

    response = root.get(url)

    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert [m.seq for m in formset.get_queryset()] == [3, 4, 5]
    html = response.content.decode()
    assert "[tool calls: read_file]" in html
    assert 'name="_save"' not in html
    assert root.post(url, {"title": "changed"}).status_code == 403
    session.refresh_from_db()
    assert session.title == "m0"


def test_it_refuses_to_add_or_delete_in_the_read_only_admins(root, make_session):
    session = make_session("s-1")
    AuditEvent.objects.create(event_type="error", session_id="s-1")
    LLMRequest.objects.create(session_id="s-1", provider="demo")
    ToolCall.objects.create(session=session, call_id="c1", tool_name="read_file")
    for model in (AgentSession, AuditEvent, LLMRequest, AgentContext, ToolCall):
        info = model._meta.app_label, model._meta.model_name
        obj = model.objects.first()
        assert obj is not None
        assert root.get(reverse("admin:{}_{}_add".format(*info))).status_code == 403
        delete = reverse("admin:{}_{}_delete".format(*info), args=[obj.pk])
        assert root.post(delete, {"post": "yes"}).status_code == 403
        change = reverse("admin:{}_{}_change".format(*info), args=[obj.pk])
        assert root.get(change).status_code == 200
        changelist = root.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert changelist.context["action_form"] is None  # not even delete_selected
        assert model.objects.filter(pk=obj.pk).exists()


def test_it_lists_and_filters_the_audit_log(root, make_session):
    make_session("s-1")
    make_session("s-2")
    AuditEvent.objects.create(event_type="error", session_id="s-2", data={"detail": "boom"})

    assert {e.session_id for e in listed(root.get("/admin/agent_sessions/auditevent/"))} == {
        "s-1",
        "s-2",
    }
    errors = listed(root.get("/admin/agent_sessions/auditevent/?event_type__exact=error"))
    assert [e.session_id for e in errors] == ["s-2"]
    created = listed(root.get("/admin/agent_sessions/auditevent/?q=s-1"))
    assert [e.event_type for e in created] == ["session_created"]
    page = root.get(reverse("admin:agent_sessions_auditevent_change", args=[errors[0].pk]))
    assert "&quot;detail&quot;: &quot;boom&quot;" in page.content.decode()


def test_it_lists_llm_requests(root):
    LLMRequest.objects.create(session_id="s-1", provider="demo", success=False, error="x")
    LLMRequest.objects.create(session_id="s-2", provider="demo")

    failed = listed(root.get("/admin/agent_sessions/llmrequest/?success__exact=0"))
    assert [r.session_id for r in failed] == ["s-1"]
    assert len(listed(root.get("/admin/agent_sessions/llmrequest/?q=s-2"))) == 1


def test_it_shows_the_agent_context_with_its_switch_history(root, make_session):
    session = make_session("s-1")
    agent_switch(session=session, to_agent="coder", reason="code change")
    agent_switch(session=session, to_agent="architect", reason="design first")
    context = AgentContext.objects.get(session=session)

    assert [c.current_agent for c in listed(root.get("/admin/agents/agentcontext/"))] == [
        "architect"
    ]
    response = root.get(reverse("admin:agents_agentcontext_change", args=[context.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "switch history" in html.lower()
    assert html.index("code change") < html.index("design first")


def test_it_lists_and_filters_tool_calls(root, make_session):
    session = make_session("s-1")
    ToolCall.objects.create(
        session=session, call_id="c1", tool_name="read_file", status="completed"
    )
    ToolCall.objects.create(
        session=session,
        call_id="c2",
        tool_name="write_file",
        status="awaiting_approval",
        requires_approval=True,
        arguments={"path": "a.md"},
        created_at=timezone.now(),
    )

    def calls(query: str) -> list[str]:
        return sorted(c.call_id for c in listed(root.get("/admin/agents/toolcall/" + query)))

    assert calls("") == ["c1", "c2"]
    assert calls("?status__exact=awaiting_approval") == ["c2"]
    assert calls("?tool_name=read_file") == ["c1"]
    assert calls("?q=c2") == ["c2"]
    page = root.get(
        reverse("admin:agents_toolcall_change", args=[ToolCall.objects.get(call_id="c2").pk])
    )
    assert "&quot;path&quot;: &quot;a.md&quot;" in page.content.decode()
