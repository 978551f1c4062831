"""The staff console's approval queue, decision page and bulk decisions."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from agents.models import ToolCall
from agents.services import agent_switch
from approvals.models import Approval
from sessions.models import Message
from sessions.services import message_append, session_create

QUEUE = "/admin/approvals/approval/"
WRITE_ARGS = {"path": "notes.md", "content": "# Notes\n<b>not bold</b>\nline 3\n"}


def decide_url(approval: Approval) -> str:
    return reverse("admin:approvals_approval_decide", args=[approval.pk])


def make_approval(
    session_id: str = "s-1",
    *,
    call_id: str = "c1",
    tool_name: str = "write_file",
    agent: str = "coder",
    arguments: dict[str, Any] | None = None,
    age: timedelta = timedelta(0),
    new_session: bool = True,
) -> Approval:
    """A session whose agent asked for a tool call that now waits for a human."""
    arguments = dict(WRITE_ARGS if arguments is None else arguments)
    if new_session:
        session = session_create(session_id=session_id)
        agent_switch(session=session, to_agent=agent)
        message_append(session=session, role="user", content=f"please use {tool_name}")
    message_append(
        session=session_id,
        role="assistant",
        content="",
        tool_calls=[
            {
                "id": call_id,
                "type": "function",
                "function": {"name": tool_name, "arguments": json.dumps(arguments)},
            }
        ],
        agent=agent,
    )
    created = timezone.now() - age
    ToolCall.objects.create(
        session_id=session_id,
        call_id=call_id,
        tool_name=tool_name,
        agent=agent,
        status=ToolCall.Status.AWAITING_APPROVAL,
        requires_approval=True,
        arguments=arguments,
        created_at=created,
    )
    return Approval.objects.create(
        session_id=session_id,
        call_id=call_id,
        tool_name=tool_name,
        agent=agent,
        arguments=arguments,
        created_at=created,
    )


def mark_decided(approval: Approval, *, by: str = "ide") -> None:
    Approval.objects.filter(pk=approval.pk).update(
        status=Approval.Status.APPROVED,
        decided_at=timezone.now(),
        decided_by_kind=Approval.DeciderKind.IDE,
        decided_by=by,
    )
    ToolCall.objects.filter(session_id=approval.session_id, call_id=approval.call_id).update(
        status=ToolCall.Status.EMITTED
    )


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def staff(db: Any) -> User:
    user = User.objects.create_user("alice", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    return user


@pytest.fixture
def viewer(db: Any) -> User:
    """Staff who may look at approvals but not decide them."""
    user = User.objects.create_user("victor", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_approval", content_type__app_label="approvals")
    )
    return user


@pytest.fixture
def alice(client: Any, staff: User) -> Any:
    client.force_login(staff)
    return client


# --- the queue ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_pending_approvals_oldest_first_with_counts(alice):
    newer = make_approval("s-new", age=timedelta(minutes=1))
    older = make_approval("s-old", age=timedelta(hours=2))
    decided = make_approval("s-done", age=timedelta(hours=3))
    mark_decided(decided)

    response = alice.get(QUEUE)

    assert response.status_code == 200
    shown = list(response.context["cl"].result_list)
    assert shown == [older, newer]
    html = response.content.decode()
    assert html.index("s-old") < html.index("s-new")
    assert "s-done" not in html.split('id="changelist"')[1].split("</table>")[0]
    counts = {row["value"]: row["count"] for row in response.context["status_counts"]}
    assert counts["pending"] == 2
    assert counts["approved"] == 1
    assert counts["rejected"] == 0
    assert response.context["total_count"] == 3
    assert 'data-status="pending">2<' in html
    assert decide_url(older) in html
    assert "Decide →" in html
    assert "notes.md (31 chars)" in html
    assert "agent-runtime staff console" in html


@pytest.mark.django_db
def test_it_filters_the_queue(alice):
    make_approval("s-w", tool_name="write_file", agent="coder")
    make_approval(
        "s-x",
        tool_name="execute_command",
        agent="debug",
        arguments={"command": "make test", "cwd": "app"},
    )
    decided = make_approval("s-d")
    mark_decided(decided)

    def listed(query: str) -> set[str]:
        response = alice.get(QUEUE + query)
        assert response.status_code == 200
        return {a.session_id for a in response.context["cl"].result_list}

    assert listed("") == {"s-w", "s-x"}
    assert listed("?status=all") == {"s-w", "s-x", "s-d"}
    assert listed("?status=approved") == {"s-d"}
    assert listed("?tool_name=execute_command") == {"s-x"}
    assert listed("?agent=coder&status=all") == {"s-w", "s-d"}
    assert listed("?q=s-x") == {"s-x"}
    assert "$ make test" in alice.get(QUEUE).content.decode()


@pytest.mark.django_db
def test_it_shows_the_columns_each_status_needs(alice):
    pending = make_approval("s-p")
    decided = make_approval("s-d", age=timedelta(minutes=5))
    mark_decided(decided, by="staff:carol")

    def columns(query: str) -> list[str]:
        return list(alice.get(QUEUE + query).context["cl"].list_display)

    queue = ["decide_link", "tool_name", "arguments_summary", "session_link", "agent", "age"]
    assert columns("") == ["action_checkbox", *queue]
    assert columns("?status=pending") == ["action_checkbox", *queue]
    decided_columns = ["tool_name", "arguments_summary", "session_link", "agent", "requested"]
    assert columns("?status=approved") == ["action_checkbox", *decided_columns, "outcome"]
    assert columns("?status=all") == ["action_checkbox", *decided_columns, "outcome"]
    html = alice.get(QUEUE + "?status=approved").content.decode()
    assert "Approved by staff:carol after 5\xa0minutes</span>" in html
    html = alice.get(QUEUE + "?status=all").content.decode()
    assert (
        f'<td class="field-outcome">Pending: <a class="decide-link" href="{decide_url(pending)}">'
        "Decide →</a></td>"
    ) in html


@pytest.mark.django_db
def test_it_counts_the_pending_approvals_on_the_index(alice):
    make_approval("s-1", age=timedelta(minutes=30))
    make_approval("s-2", age=timedelta(minutes=1))
    mark_decided(make_approval("s-3", age=timedelta(hours=2)))

    html = alice.get("/admin/").content.decode()

    assert '<p id="pending-approvals" class="has-pending">' in html
    assert '<span class="badge" data-count="2">2</span>' in html
    assert "<span>tool calls wait for a decision" in html
    assert "(the oldest for 30\xa0minutes)" in html
    assert (
        '<a href="/admin/approvals/approval/?status=pending">Open the approval queue →</a>' in html
    )
    assert html.index('id="pending-approvals"') < html.index('id="content-main"')

    Approval.objects.filter(session_id="s-2").delete()
    assert "<span>tool call waits for a decision" in alice.get("/admin/").content.decode()
    Approval.objects.filter(session_id="s-1").delete()
    html = alice.get("/admin/").content.decode()
    assert '<p id="pending-approvals" class="">' in html
    assert "No tool call waits for a decision." in html


@pytest.mark.django_db
def test_it_shows_no_count_to_staff_who_may_not_see_approvals(client):
    make_approval()
    client.force_login(User.objects.create_user("nobody", is_staff=True))

    response = client.get("/admin/")

    assert response.status_code == 200
    assert 'id="pending-approvals"' not in response.content.decode()


@pytest.mark.django_db
def test_it_requires_a_staff_login(client, staff):
    approval = make_approval()
    for url in (QUEUE, decide_url(approval)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")

    plain = User.objects.create_user("bob", password="pw")
    plain.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    client.force_login(plain)
    response = client.post(decide_url(approval), {"decision": "approve"})
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


# --- the decision page -------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_renders_the_conversation_and_a_write_file_call(alice):
    approval = make_approval()

    response = alice.get(decide_url(approval))

    assert response.status_code == 200
    html = response.content.decode()
    assert "please use write_file" in html  # the conversation
    assert 'class="tool-call this-call"' in html
    assert '<code id="arguments-path">notes.md</code>' in html
    # The file content verbatim (escaped) in a <pre>.
    assert (
        '<pre class="file-content" id="arguments-content"># Notes\n'
        "&lt;b&gt;not bold&lt;/b&gt;\nline 3\n</pre>"
    ) in html
    assert 'id="decision-form"' in html
    for element_id in ("id_arguments", "id_feedback", "decide-approve", "decide-edit"):
        assert f'id="{element_id}"' in html
    assert 'name="decision" value="reject" id="decide-reject"' in html
    # The edit box is prefilled with the pretty-printed arguments.
    assert response.context["form"]["arguments"].value() == json.dumps(WRITE_ARGS, indent=2)


@pytest.mark.django_db
def test_it_renders_an_execute_command_call_as_a_command(alice):
    approval = make_approval(
        tool_name="execute_command",
        agent="debug",
        arguments={"command": "rm -rf build && make", "cwd": "src", "timeout": 30},
    )

    html = alice.get(decide_url(approval)).content.decode()

    assert (
        '<pre class="shell-command" id="arguments-command">rm -rf build &amp;&amp; make</pre>'
        in html
    )
    assert '<code id="arguments-cwd">src</code>' in html
    assert "&quot;timeout&quot;: 30" in html


@pytest.mark.django_db
def test_it_renders_other_tools_as_json(alice):
    approval = make_approval(
        tool_name="create_directory", arguments={"path": "docs/new", "recursive": True}
    )

    html = alice.get(decide_url(approval)).content.decode()

    assert '<pre class="json" id="arguments-json">{\n  &quot;path&quot;' in html


@pytest.mark.django_db
def test_it_shows_the_change_view_read_only_with_a_decide_link(alice):
    approval = make_approval()
    url = reverse("admin:approvals_approval_change", args=[approval.pk])

    response = alice.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="decide-button" class="decide-link" href="{decide_url(approval)}"' in html
    assert 'name="_save"' not in html
    assert alice.post(url, {}).status_code == 403
    assert alice.get(reverse("admin:approvals_approval_add")).status_code == 403
    delete = reverse("admin:approvals_approval_delete", args=[approval.pk])
    assert alice.post(delete, {"post": "yes"}).status_code == 403
    assert Approval.objects.filter(pk=approval.pk).exists()

    mark_decided(approval)
    assert 'id="decide-button"' not in alice.get(url).content.decode()


@pytest.mark.django_db(transaction=True)
def test_it_approves(alice):
    approval = make_approval()

    response = alice.post(decide_url(approval), {"decision": "approve", "arguments": "ignored"})

    assert response.status_code == 302
    assert response["Location"] == QUEUE
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.decided_by == "staff:alice"
    assert approval.decided_by_kind == Approval.DeciderKind.STAFF
    assert approval.decided_by_user is not None and approval.decided_by_user.username == "alice"
    assert approval.edited_arguments is None
    call = ToolCall.objects.get(session_id="s-1", call_id="c1")
    assert call.status == ToolCall.Status.EMITTED
    assert call.arguments == WRITE_ARGS
    assert any("Approved write_file (c1)" in text for text in texts(response))


@pytest.mark.django_db(transaction=True)
def test_it_shows_an_edit_before_releasing_it(alice):
    approval = make_approval()
    edited = {"path": "docs/notes.md", "content": "# Notes\n<b>not bold</b>\nline three\n"}

    preview = alice.post(
        decide_url(approval),
        {"decision": "edit", "arguments": json.dumps(edited), "feedback": "smaller file"},
    )

    assert preview.status_code == 200
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert ToolCall.objects.get(call_id="c1").status == ToolCall.Status.AWAITING_APPROVAL
    html = preview.content.decode()
    assert 'id="approval-edit-preview"' in html
    assert "<del>&quot;notes.md&quot;</del> → <ins>&quot;docs/notes.md&quot;</ins>" in html
    assert (
        '<pre class="diff"><span class="diff-hunk">@@ -1,3 +1,3 @@</span>'
        '<span class="diff-context"> # Notes</span>'
        '<span class="diff-context"> &lt;b&gt;not bold&lt;/b&gt;</span>'
        '<span class="diff-remove">-line 3</span>'
        '<span class="diff-add">+line three</span></pre>'
    ) in html
    digest = hashlib.sha256(
        b'{"content":"# Notes\\n<b>not bold</b>\\nline three\\n","path":"docs/notes.md"}'
    ).hexdigest()
    assert f'<input type="hidden" name="previewed" value="{digest}">' in html
    assert 'form="decision-form" name="decision" value="release" id="decide-release"' in html
    # The edit and the feedback are still in the form, to release or to change again.
    assert json.loads(preview.context["form"]["arguments"].value()) == edited
    assert preview.context["form"]["feedback"].value() == "smaller file"

    response = alice.post(
        decide_url(approval),
        {
            "decision": "release",
            "arguments": json.dumps(edited, indent=4),  # spacing is not a change
            "feedback": "smaller file",
            "previewed": digest,
        },
    )

    assert response.status_code == 302
    assert response["Location"] == QUEUE
    approval.refresh_from_db()
    assert approval.status == Approval.Status.EDITED
    assert approval.edited_arguments == edited
    assert approval.arguments == WRITE_ARGS
    assert approval.feedback == "smaller file"
    call = ToolCall.objects.get(session_id="s-1", call_id="c1")
    assert call.status == ToolCall.Status.EMITTED
    assert call.arguments == edited
    assert any("Edited and released write_file (c1)" in text for text in texts(response))

    html = alice.get(decide_url(approval)).content.decode()
    assert 'id="approval-edited-arguments"' in html
    assert 'id="decision-form"' not in html


@pytest.mark.django_db
@pytest.mark.parametrize("previewed", ["", "0" * 64])
def test_it_shows_an_edit_changed_after_its_preview_again(alice, previewed):
    approval = make_approval()
    edited = {"path": "notes.md", "content": "other\n"}

    response = alice.post(
        decide_url(approval),
        {"decision": "release", "arguments": json.dumps(edited), "previewed": previewed},
    )

    assert response.status_code == 200
    assert 'id="approval-edit-preview"' in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert approval.edited_arguments is None
    assert ToolCall.objects.get(call_id="c1").arguments == WRITE_ARGS


@pytest.mark.django_db
def test_it_says_when_an_edit_changes_nothing(alice):
    approval = make_approval()

    response = alice.post(
        decide_url(approval), {"decision": "edit", "arguments": json.dumps(WRITE_ARGS)}
    )

    html = response.content.decode()
    assert "No change against the model's arguments." in html
    assert "Unchanged: <code>path</code>, <code>content</code>" in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ('{"path": "a.md",', "This is not valid JSON"),
        ('["a.md"]', "must be a JSON object"),
        ("", "Edit needs the new arguments"),
    ],
)
def test_it_refuses_edits_that_are_not_a_json_object(alice, raw, error):
    approval = make_approval()

    response = alice.post(decide_url(approval), {"decision": "edit", "arguments": raw})

    assert response.status_code == 200
    assert error in str(response.context["form"].errors["arguments"])
    assert error in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert ToolCall.objects.get(call_id="c1").status == ToolCall.Status.AWAITING_APPROVAL
    assert ToolCall.objects.get(call_id="c1").arguments == WRITE_ARGS


@pytest.mark.django_db
def test_it_refuses_an_edit_the_agents_policy_forbids(alice):
    approval = make_approval(agent="architect", arguments={"path": "docs/plan.md", "content": "x"})
    forbidden = {"path": "../app.md", "content": "x"}

    preview = alice.post(
        decide_url(approval), {"decision": "edit", "arguments": json.dumps(forbidden)}
    )

    # The preview says so at once, and offers no release.
    html = preview.content.decode()
    assert (
        '<p class="errornote" id="edit-refused">The agent\'s policy refuses this edit: The '
        "architect agent may only write Markdown files (*.md); &quot;../app.md&quot; is not "
        "allowed: it climbs out of the workspace with &quot;..&quot;."
    ) in html
    assert 'id="decide-release"' not in html

    # Released anyway (a hand-made POST): the service refuses it, and nothing changes.
    response = alice.post(
        decide_url(approval),
        {
            "decision": "release",
            "arguments": json.dumps(forbidden),
            "previewed": preview.context["preview"]["digest"],
        },
    )

    assert response.status_code == 200
    assert any("the edited call is not allowed" in text for text in texts(response))
    assert "../app.md" in response.content.decode()  # the staff's edit is still in the box
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert approval.edited_arguments is None
    call = ToolCall.objects.get(call_id="c1")
    assert call.status == ToolCall.Status.AWAITING_APPROVAL
    assert call.arguments == {"path": "docs/plan.md", "content": "x"}


@pytest.mark.django_db
def test_it_shows_what_a_decided_edit_changed(alice):
    approval = make_approval(
        tool_name="execute_command", arguments={"command": "make deploy", "timeout": 60}
    )
    Approval.objects.filter(pk=approval.pk).update(
        status=Approval.Status.EDITED,
        decided_at=timezone.now(),
        decided_by_kind=Approval.DeciderKind.STAFF,
        decided_by="staff:carol",
        edited_arguments={"command": "make deploy-staging", "timeout": 60, "cwd": "app"},
    )
    expected = (
        '<div class="argument-change change-changed" data-argument="command">\n'
        '    <p><code>command</code> <span class="change-kind">changed</span></p>\n'
        "    \n"
        '    <p class="value-change"><del>&quot;make deploy&quot;</del> → '
        "<ins>&quot;make deploy-staging&quot;</ins></p>"
    )

    page = alice.get(decide_url(approval)).content.decode()
    change = alice.get(reverse("admin:approvals_approval_change", args=[approval.pk]))

    assert 'id="approval-edit-diff"' in page
    assert expected in page
    assert '<p class="value-change"><ins>&quot;app&quot;</ins></p>' in page
    assert "Unchanged: <code>timeout</code>" in page
    assert expected in change.content.decode()
    assert (
        'id="approval-edit-diff"'
        not in alice.get(decide_url(make_approval("s-2"))).content.decode()
    )


@pytest.mark.django_db
def test_it_refuses_feedback_over_the_limit(alice, settings):
    settings.APPROVAL_FEEDBACK_MAX_CHARS = 10
    approval = make_approval()

    response = alice.post(decide_url(approval), {"decision": "reject", "feedback": "x" * 11})

    assert response.status_code == 200
    assert response.context["form"].errors["feedback"]
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_it_rejects_with_feedback_and_the_agent_answers(alice):
    approval = make_approval()

    response = alice.post(
        decide_url(approval), {"decision": "reject", "feedback": "not in this repo"}
    )

    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.status == Approval.Status.REJECTED
    assert approval.feedback == "not in this repo"
    assert ToolCall.objects.get(call_id="c1").status == ToolCall.Status.REJECTED
    history = list(Message.objects.filter(session_id="s-1").order_by("seq"))
    result = next(m for m in history if m.role == "tool" and m.tool_call_id == "c1")
    assert result.content.endswith("rejected by staff:alice: not in this repo")
    after = [m for m in history if m.seq > result.seq]
    assert after and after[0].role == "assistant"
    assert after[0].content.startswith("[demo]")


@pytest.mark.django_db
def test_it_refuses_a_second_decision(alice):
    approval = make_approval()
    mark_decided(approval, by="ide")

    response = alice.post(decide_url(approval), {"decision": "reject", "feedback": "late"})

    assert response.status_code == 200
    assert any("already decided (approved by ide)" in text for text in texts(response))
    html = response.content.decode()
    assert 'id="decision-form"' not in html
    assert 'id="approval-outcome"' in html
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.feedback == ""
    assert not Message.objects.filter(role="tool").exists()


@pytest.mark.django_db
def test_it_shows_a_decided_approval_without_a_form(alice):
    approval = make_approval()
    mark_decided(approval, by="staff:carol")

    html = alice.get(decide_url(approval)).content.decode()

    assert 'id="decision-form"' not in html
    assert "Approved by staff:carol" in html


@pytest.mark.django_db
def test_it_answers_403_to_staff_without_the_decide_permission(client, viewer):
    approval = make_approval()
    client.force_login(viewer)

    page = client.get(decide_url(approval))
    assert page.status_code == 200
    assert 'id="decision-form"' not in page.content.decode()
    assert 'id="no-decide-permission"' in page.content.decode()

    response = client.post(decide_url(approval), {"decision": "approve"})
    assert response.status_code == 403

    queue = client.get(QUEUE)
    assert queue.status_code == 200
    # Deleting is off too, so no action is left at all: no action bar.
    assert queue.context["action_form"] is None
    assert "approve_selected" not in queue.content.decode()

    client.post(QUEUE, {"action": "approve_selected", "_selected_action": [approval.pk]})
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


@pytest.mark.django_db
def test_it_refuses_staff_with_no_approval_permissions(client):
    approval = make_approval()
    client.force_login(User.objects.create_user("nobody", is_staff=True))

    assert client.get(QUEUE).status_code == 403
    assert client.get(decide_url(approval)).status_code == 403
    assert client.post(decide_url(approval), {"decision": "approve"}).status_code == 403


# --- bulk decisions ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("action", "status", "verb"),
    [
        ("approve_selected", Approval.Status.APPROVED, "Approved"),
        ("reject_selected", Approval.Status.REJECTED, "Rejected"),
    ],
)
def test_it_decides_in_bulk_and_reports_the_skipped(alice, action, status, verb):
    first = make_approval("s-a", age=timedelta(minutes=3))
    second = make_approval("s-b", age=timedelta(minutes=2))
    late = make_approval("s-c", age=timedelta(minutes=1))
    queue = alice.get(QUEUE)
    assert [name for name, _ in queue.context["action_form"].fields["action"].choices][1:] == [
        "approve_selected",
        "reject_selected",
    ]
    mark_decided(late, by="ide")  # someone else decides it after the page loaded

    response = alice.post(
        QUEUE,
        {"action": action, "_selected_action": [first.pk, second.pk, late.pk]},
        follow=True,
    )

    assert response.status_code == 200
    for approval in (first, second):
        approval.refresh_from_db()
        assert approval.status == status
        assert approval.decided_by == "staff:alice"
    late.refresh_from_db()
    assert late.status == Approval.Status.APPROVED
    assert late.decided_by == "ide"
    shown = texts(response)
    assert f"{verb} 2 tool call(s)." in shown
    assert any(text.startswith("Skipped 1 of 3") and "c1" in text for text in shown)
    if status == Approval.Status.REJECTED:
        # Each rejected session took its next turn.
        for session_id in ("s-a", "s-b"):
            last = Message.objects.filter(session_id=session_id).order_by("-seq").first()
            assert last is not None
            assert last.role == "assistant" and last.content.startswith("[demo]")
    else:
        statuses = ToolCall.objects.filter(session_id__in=["s-a", "s-b"]).values_list(
            "status", flat=True
        )
        assert set(statuses) == {ToolCall.Status.EMITTED}
