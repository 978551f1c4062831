"""The decision service: every transition, every refusal, one winner under a race."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from agent_runtime.errors import ApplicationError, Conflict, NotFound
from agents.models import AgentContext, ToolCall
from approvals.models import Approval
from approvals.services import approval_decide, approvals_expire
from sessions.models import AuditEvent, Message
from sessions.services import message_append, session_create

ARGS = {"path": "notes.md", "content": "# hi"}


def pending(session_id: str = "a1", call_id: str = "c1", agent: str = "architect") -> Approval:
    """A session whose architect asked to write a file and waits for a human."""
    session_create(session_id=session_id)
    AgentContext.objects.filter(session_id=session_id).update(current_agent=agent)
    message_append(session=session_id, role="user", content="write notes")
    message_append(
        session=session_id,
        role="assistant",
        tool_calls=[
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "write_file", "arguments": '{"path": "notes.md"}'},
            }
        ],
        agent=agent,
    )
    ToolCall.objects.create(
        session_id=session_id,
        call_id=call_id,
        tool_name="write_file",
        agent=agent,
        arguments=ARGS,
        status=ToolCall.Status.AWAITING_APPROVAL,
        requires_approval=True,
    )
    return Approval.objects.create(
        session_id=session_id, call_id=call_id, tool_name="write_file", agent=agent, arguments=ARGS
    )


def decide(decision: str, *, call_id: str = "c1", **kwargs: Any) -> Approval:
    kwargs.setdefault("decided_by_kind", "staff")
    kwargs.setdefault("decided_by", "staff:bob")
    return approval_decide(session_id="a1", call_id=call_id, decision=decision, **kwargs)


@pytest.mark.django_db
class TestTransitions:
    def test_it_approves(self):
        pending()
        approval = decide("approve", feedback="fine")
        assert approval.status == "approved"
        approval.refresh_from_db()
        assert approval.decided_by == "staff:bob" and approval.decided_by_kind == "staff"
        assert approval.decided_at is not None and approval.feedback == "fine"
        call = ToolCall.objects.get(call_id="c1")
        assert call.status == "emitted" and call.arguments == ARGS
        event = AuditEvent.objects.get(event_type="hitl_decision")
        assert event.data["decision"] == "approved" and event.data["decided_by"] == "staff:bob"

    def test_it_applies_an_edit_after_checking_policy(self):
        pending()
        edited = {"path": "docs/other.md", "content": "# edited"}
        approval = decide("edit", modified_arguments=edited)
        assert approval.status == "edited" and approval.edited_arguments == edited
        assert approval.arguments == ARGS  # the original stays for the audit
        assert ToolCall.objects.get(call_id="c1").arguments == edited

    def test_it_rejects_with_a_tool_result(self):
        pending()
        decide("reject", feedback="use the wiki")
        call = ToolCall.objects.get(call_id="c1")
        assert call.status == "rejected"
        tool = Message.objects.get(role="tool")
        assert tool.tool_call_id == "c1" and tool.name == "write_file"
        assert tool.content == "The write_file call was rejected by staff:bob: use the wiki"

    def test_it_expires_stale_approvals_as_system(self):
        pending()
        pending("a2", "c2")
        Approval.objects.filter(call_id="c1").update(created_at=timezone.now() - timedelta(days=2))
        expired = approvals_expire()
        assert [a.call_id for a in expired] == ["c1"]
        approval = Approval.objects.get(call_id="c1")
        assert approval.status == "expired" and approval.decided_by == "system"
        assert "expired without a decision by system" in Message.objects.get(role="tool").content
        assert Approval.objects.get(call_id="c2").status == "pending"


@pytest.mark.django_db
class TestRefusals:
    def check_nothing_changed(self) -> None:
        approval = Approval.objects.get(call_id="c1")
        assert approval.status == "pending" and approval.decided_at is None
        assert ToolCall.objects.get(call_id="c1").status == "awaiting_approval"
        assert not Message.objects.filter(role="tool").exists()

    @pytest.mark.parametrize(
        ("decision", "kwargs", "words"),
        [
            ("maybe", {}, "decision must be"),
            ("edit", {}, "modified_arguments"),
            ("edit", {"modified_arguments": ["x"]}, "modified_arguments"),
            ("edit", {"modified_arguments": {"path": "evil.py", "content": "x"}}, "not allowed"),
            ("edit", {"modified_arguments": {"content": "no path"}}, "not allowed"),
            ("reject", {"feedback": "x" * 5000}, "too long"),
        ],
    )
    def test_it_refuses_bad_decisions(self, decision, kwargs, words):
        pending()
        with pytest.raises(ApplicationError, match=words) as info:
            decide(decision, **kwargs)
        assert info.value.status == 400
        self.check_nothing_changed()

    def test_it_refuses_an_unknown_call(self):
        pending()
        with pytest.raises(NotFound):
            decide("approve", call_id="nope")
        self.check_nothing_changed()

    def test_it_refuses_a_second_decision(self):
        pending()
        decide("approve")
        with pytest.raises(Conflict, match="already decided") as info:
            decide("reject")
        assert info.value.status == 409
        assert Approval.objects.get(call_id="c1").status == "approved"
        assert AuditEvent.objects.filter(event_type="hitl_decision").count() == 1

    def test_the_database_allows_one_approval_per_call(self):
        from django.db import IntegrityError

        pending()
        with pytest.raises(IntegrityError):
            Approval.objects.create(session_id="a1", call_id="c1", tool_name="write_file")


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_deciders_one_wins():
    """Real concurrency: two threads, two connections, one conditional UPDATE wins."""
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass (SQLite's in-memory test database locks tables)")
    pending()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def decider(decision: str) -> None:
        barrier.wait()
        try:
            decide(decision, decided_by=f"staff:{decision}")
            outcomes.append("won")
        except Conflict:
            outcomes.append("409")
        finally:
            connection.close()

    threads = [threading.Thread(target=decider, args=(d,)) for d in ("approve", "reject")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["409", "won"], outcomes
    approval = Approval.objects.get(call_id="c1")
    call = ToolCall.objects.get(call_id="c1")
    # The winner's decision, applied whole: no mix of one decider's status and the other's effects.
    if approval.decided_by == "staff:approve":
        assert approval.status == "approved" and call.status == "emitted"
        assert not Message.objects.filter(role="tool").exists()
    else:
        assert approval.status == "rejected" and call.status == "rejected"
        assert Message.objects.filter(role="tool").count() == 1
    assert AuditEvent.objects.filter(event_type="hitl_decision").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_rest_endpoint_decides_and_continues(api, llm):
    from tests import fakellm

    pending()
    llm.enqueue(fakellm.text("Understood."))
    url = "/sessions/a1/approvals/c1/decision"
    assert api.post(url, {"decision": "nope"}, format="json").status_code == 400
    assert (
        api.post(
            "/sessions/a1/approvals/zz/decision", {"decision": "approve"}, format="json"
        ).status_code
        == 404
    )
    assert (
        api.post(
            "/sessions/zz/approvals/c1/decision", {"decision": "approve"}, format="json"
        ).status_code
        == 404
    )
    bad_who = api.post(url, {"decision": "reject", "decided_by": "a b"}, format="json")
    assert bad_who.status_code == 400
    response = api.post(
        url, {"decision": "reject", "feedback": "no", "decided_by": "carol"}, format="json"
    )
    assert response.status_code == 200, response.content
    data = response.json()["approval"]
    assert data["status"] == "rejected" and data["decided_by"] == "ide:carol"
    # The agent took its next turn after the rejection.
    last = Message.objects.filter(session_id="a1").order_by("-seq").first()
    assert last is not None and last.content == "Understood."
    again = api.post(url, {"decision": "approve"}, format="json")
    assert again.status_code == 409
    assert "already decided" in again.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_the_expiry_command_is_a_dry_run_unless_for_real(settings):
    settings.APPROVAL_TTL_SECONDS = 60
    pending()
    Approval.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    out = StringIO()
    call_command("expire_approvals", stdout=out)
    assert "would expire 1 approval(s)" in out.getvalue()
    assert Approval.objects.get().status == "pending"
    call_command("expire_approvals", "--for-real", stdout=out)
    assert "expired 1 approval(s)" in out.getvalue()
    assert Approval.objects.get().status == "expired"
    # The demo model (no LLM configured) answered the expiry: the session moved on.
    last = Message.objects.filter(session_id="a1").order_by("-seq").first()
    assert last is not None and last.role == "assistant"


@pytest.mark.django_db
def test_schedules_are_declared_idempotently():
    from django_q.models import Schedule

    call_command("setup_schedules", stdout=StringIO())
    call_command("setup_schedules", stdout=StringIO())
    names = sorted(Schedule.objects.values_list("name", flat=True))
    assert names == ["expire-approvals", "purge-sessions"]
    assert Schedule.objects.get(name="expire-approvals").func == "approvals.tasks.expire_approvals"


@pytest.mark.django_db(transaction=True)
def test_expiry_skips_deleted_sessions_and_keeps_going(settings):
    from approvals.tasks import expire_approvals
    from sessions.models import AgentSession
    from sessions.services import session_delete

    pending("gone", "g1")
    pending("live", "l1")
    session_delete(session=AgentSession.objects.get(pk="gone"))
    Approval.objects.update(created_at=timezone.now() - timedelta(days=2))
    assert expire_approvals(inline=True) == 1
    assert Approval.objects.get(call_id="g1").status == "cancelled"  # closed by the delete
    assert Approval.objects.get(call_id="l1").status == "expired"
    # The live session's agent carried on (the demo model answered the expiry).
    last = Message.objects.filter(session_id="live").order_by("-seq").first()
    assert last is not None and last.role == "assistant"


@pytest.mark.django_db(transaction=True)
def test_the_scheduled_expiry_leaves_the_embedded_defaults_to_the_server(settings):
    from approvals.tasks import expire_approvals

    settings.REDIS_URL = ""
    pending("a1", "c1")
    Approval.objects.update(created_at=timezone.now() - timedelta(days=2))
    assert expire_approvals() == 0  # the server process expires it, where its sockets are
    assert Approval.objects.get().status == "pending"
    assert expire_approvals(inline=True) == 1  # the command does it wherever it runs


@pytest.mark.django_db(transaction=True)
def test_the_scheduled_expiry_queues_one_task_per_session(settings):
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    from approvals.tasks import expire_approvals, resume_session

    settings.REDIS_URL = "redis://127.0.0.1:6379/15"  # the cluster's turns reach every socket
    pending("a1", "c1")
    pending("a2", "c2")
    Approval.objects.update(created_at=timezone.now() - timedelta(days=2))
    assert expire_approvals() == 2
    queued = [SignedPackage.loads(row.payload) for row in OrmQ.objects.all()]
    assert sorted(task["args"] for task in queued) == [("a1", "c1"), ("a2", "c2")]
    assert {task["func"] for task in queued} == {"approvals.tasks.resume_session"}
    resume_session("a1", "c1")  # what the worker runs
    last = Message.objects.filter(session_id="a1").order_by("-seq").first()
    assert last is not None and last.role == "assistant"
    resume_session("missing", "c9")  # a failure is logged, not raised
