"""The REST endpoints of PROTOCOL §2, field by field."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from agents.models import AgentContext
from sessions.models import AgentSession, AuditEvent, Message

pytestmark = pytest.mark.django_db

SESSION_KEYS = ["id", "message_count", "created_at", "is_active", "current_agent"]
LIST_ITEM_KEYS = ["id", "title", "message_count", "last_activity", "is_active", "current_agent"]
DETAIL_KEYS = [
    "id", "title", "description", "message_count", "messages",
    "last_activity", "is_active", "created_at", "duration_seconds",
]  # fmt: skip


def assert_aware(value: str) -> None:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    offset = parsed.utcoffset()
    assert offset is not None and offset.total_seconds() == 0


def test_it_creates_a_session_with_a_client_chosen_id(api):
    response = api.post("/sessions", {"session_id": "ide-1.a:b_c", "title": "t"}, format="json")
    assert response.status_code == 201
    data = response.json()
    assert all(key in data for key in SESSION_KEYS)
    assert data["id"] == "ide-1.a:b_c"
    assert data["message_count"] == 0
    assert data["is_active"] is True
    assert data["current_agent"] == "orchestrator"
    assert_aware(data["created_at"])
    assert AgentContext.objects.get(session_id="ide-1.a:b_c").current_agent == "orchestrator"


def test_it_generates_an_id_for_an_empty_body(api):
    response = api.post("/sessions")
    assert response.status_code == 201
    assert len(response.json()["id"]) == 36


def test_it_answers_409_for_an_existing_id(api, make_session):
    make_session("taken")
    response = api.post("/sessions", {"session_id": "taken"}, format="json")
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


@pytest.mark.parametrize(
    "payload",
    [
        {"session_id": ""},
        {"session_id": "x" * 65},
        {"session_id": "has space"},
        {"session_id": "slash/y"},
        {"session_id": 12},
        {"session_id": "ok", "unknown": 1},
        {"title": "x" * 201},
        ["not", "an", "object"],
    ],
)
def test_it_refuses_bad_create_bodies(api, payload):
    response = api.post("/sessions", payload, format="json")
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert AgentSession.objects.count() == 0


def test_it_refuses_malformed_json(api):
    response = api.post("/sessions", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


def test_it_lists_sessions_with_the_true_total(api, make_session):
    for _ in range(5):
        make_session(messages=2)
    response = api.get("/sessions?limit=2&offset=1")
    assert response.status_code == 200
    data = response.json()
    assert data["total"] == 5
    assert data["limit"] == 2 and data["offset"] == 1
    assert len(data["sessions"]) == 2
    item = data["sessions"][0]
    assert all(key in item for key in LIST_ITEM_KEYS)
    assert item["message_count"] == 2
    assert item["title"] == "m0"
    assert item["current_agent"] == "orchestrator"
    assert_aware(item["last_activity"])


def test_it_lists_active_sessions_only_unless_asked(api, make_session):
    make_session("a")
    make_session("b")
    AgentSession.objects.filter(pk="b").update(is_active=False)
    for query in ["", "?active_only=true"]:
        data = api.get(f"/sessions{query}").json()
        assert [s["id"] for s in data["sessions"]] == ["a"]
        assert data["total"] == 1
    everything = api.get("/sessions?active_only=false").json()
    assert sorted(s["id"] for s in everything["sessions"]) == ["a", "b"]
    assert everything["total"] == 2


def test_it_lists_the_latest_activity_first(api, make_session):
    now = timezone.now()
    for session_id, minutes_ago in [("old", 30), ("new", 1), ("mid", 10)]:
        make_session(session_id)
        AgentSession.objects.filter(pk=session_id).update(
            last_activity=now - timedelta(minutes=minutes_ago)
        )
    data = api.get("/sessions").json()
    assert [s["id"] for s in data["sessions"]] == ["new", "mid", "old"]
    assert [s["id"] for s in api.get("/sessions?limit=1&offset=1").json()["sessions"]] == ["mid"]


def test_it_pages_by_100_by_default(api):
    AgentSession.objects.bulk_create(AgentSession(id=f"b{n:03}") for n in range(101))
    data = api.get("/sessions").json()
    assert data["limit"] == 100 and data["offset"] == 0
    assert len(data["sessions"]) == 100
    assert data["total"] == 101
    assert len(api.get("/sessions?limit=1000").json()["sessions"]) == 101


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=99999",
        "limit=99999999999999999999",
        "offset=-1",
        "offset=x",
        "limit=abc",
        "active_only=maybe",
        # Found by fuzzing: past 2**63 the database's OFFSET overflowed into a 500.
        "offset=99999999999999999999",
        "offset=1000000001",
    ],
)
def test_it_refuses_bad_paging(api, query):
    response = api.get(f"/sessions?{query}")
    assert response.status_code == 400
    name = query.split("=")[0]
    assert response.json()["detail"].startswith(f"{name}: ")


@pytest.mark.parametrize("page_size", [1, 50])
def test_it_lists_with_constant_queries(api, make_session, django_assert_num_queries, page_size):
    for _ in range(page_size):
        make_session(messages=1)
    with django_assert_num_queries(2):  # the count and the page (with its agent contexts)
        response = api.get(f"/sessions?limit={page_size}")
    assert len(response.json()["sessions"]) == page_size


def test_it_gets_a_session_with_and_without_messages(api, make_session):
    make_session("s", messages=3)
    plain = api.get("/sessions/s").json()["session"]
    assert all(key in plain for key in DETAIL_KEYS)
    assert plain["messages"] is None
    assert plain["message_count"] == 3
    assert isinstance(plain["duration_seconds"], float)
    full = api.get("/sessions/s?include_messages=true").json()["session"]
    assert [m["content"] for m in full["messages"]] == ["m0", "m1", "m2"]


@pytest.mark.parametrize("session_id", ["nope", "x" * 65, "bad%20id"])
def test_it_answers_404_for_unknown_sessions(api, session_id):
    for url in [
        f"/sessions/{session_id}",
        f"/sessions/{session_id}/history",
        f"/sessions/{session_id}/pending-approvals",
        f"/agents/{session_id}/current",
    ]:
        response = api.get(url)
        assert response.status_code == 404, url
        assert "not found" in response.json()["detail"]


def test_it_soft_deletes(api, make_session):
    make_session("gone", messages=1)
    assert api.delete("/sessions/gone").status_code == 204
    assert api.get("/sessions/gone").status_code == 404
    assert api.get("/sessions").json()["total"] == 0
    assert api.delete("/sessions/gone").status_code == 404
    row = AgentSession.objects.get(pk="gone")
    assert row.deleted_at is not None
    assert Message.objects.filter(session=row).count() == 1
    assert AuditEvent.objects.filter(event_type="session_deleted", session_id="gone").exists()


def test_it_serves_history_with_agent_history(api, make_session):
    make_session("h", messages=4)
    switched = api.post("/agents/h/switch", {"target_agent": "coder", "reason": "r"}, format="json")
    assert switched.status_code == 200
    data = api.get("/sessions/h/history").json()
    assert list(data)[:6] == [
        "session_id", "messages", "message_count", "last_activity",
        "current_agent", "agent_history",
    ]  # fmt: skip
    assert data["session_id"] == "h"
    assert data["message_count"] == 4
    assert data["current_agent"] == "coder"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert data["messages"][0]["content"] == "m0"
    (entry,) = data["agent_history"]
    assert list(entry)[:5] == ["from_agent", "to_agent", "reason", "confidence", "switched_at"]
    assert entry["from_agent"] == "orchestrator" and entry["to_agent"] == "coder"
    # An explicit switch; its confidence is a level, as in the chunks and the original.
    assert entry["reason"] == "r" and entry["confidence"] == "high"
    assert_aware(entry["switched_at"])


def test_it_pages_history(api, make_session):
    make_session("p", messages=10)
    data = api.get("/sessions/p/history?limit=3").json()
    assert [m["seq"] for m in data["messages"]] == [8, 9, 10]
    assert data["has_more"] is True
    older = api.get("/sessions/p/history?limit=3&before=8").json()
    assert [m["seq"] for m in older["messages"]] == [5, 6, 7]
    assert api.get("/sessions/p/history?limit=0").status_code == 400


@pytest.mark.parametrize("size", [1, 40])
def test_it_serves_history_with_constant_queries(
    api, make_session, django_assert_num_queries, size
):
    make_session("q", messages=size)
    with django_assert_num_queries(3):  # the session, its messages, its switches
        api.get("/sessions/q/history")


def test_it_lists_empty_pending_approvals(api, make_session):
    make_session("a")
    data = api.get("/sessions/a/pending-approvals").json()
    assert data == {"session_id": "a", "pending_approvals": [], "count": 0}


def test_it_lists_pending_approvals_by_their_call_id(api, make_session):
    from approvals.models import Approval

    session = make_session("a")
    Approval.objects.create(
        session=session,
        call_id="call_w",
        tool_name="write_file",
        arguments={"path": "a.py", "content": "x"},
        reason="writes a file",
    )
    Approval.objects.create(
        session=session,
        call_id="call_done",
        tool_name="execute_command",
        status="approved",
        decided_at=session.created_at,
    )
    data = api.get("/sessions/a/pending-approvals").json()
    assert data["session_id"] == "a" and data["count"] == 1
    (entry,) = data["pending_approvals"]
    assert list(entry)[:9] == [
        "request_id", "request_type", "subject", "details", "reason", "created_at",
        "call_id", "tool_name", "arguments",
    ]  # fmt: skip
    assert entry["request_id"] == "call_w"  # the call's id, not the row's
    assert entry["call_id"] == "call_w"
    assert entry["request_type"] == "tool"
    assert entry["subject"] == entry["tool_name"] == "write_file"
    assert entry["details"] == {"arguments": {"path": "a.py", "content": "x"}}
    assert entry["arguments"] == {"path": "a.py", "content": "x"}
    assert entry["reason"] == "writes a file"
    assert_aware(entry["created_at"])


def test_it_takes_a_json_body_whatever_the_content_type(api):
    # curl -d sends application/x-www-form-urlencoded unless told otherwise.
    response = api.post(
        "/sessions", '{"session_id": "curl"}', content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 201, response.content
    assert response.json()["id"] == "curl"
    bad = api.post("/sessions", "session_id=x", content_type="application/x-www-form-urlencoded")
    assert bad.status_code == 400
    assert "JSON" in bad.json()["detail"]


def test_it_refuses_deeply_nested_json_and_cleans_surrogates(api):
    nested = "[" * 100_000 + "]" * 100_000
    response = api.post("/sessions", nested, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]
    created = api.post(
        "/sessions", '{"session_id": "u", "title": "cut \\ud83d"}', content_type="application/json"
    )
    assert created.status_code == 201
    assert created.json()["title"] == "cut \ufffd"
