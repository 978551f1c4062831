"""``manage.py runtime_stats``: the figures of a seeded database, inside and outside the window."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from agents.models import ToolCall
from approvals.models import Approval
from sessions.models import AgentSession, AuditEvent, LLMRequest
from sessions.services import session_create, session_delete

BREAKER_REFUSAL = "The LLM is temporarily unavailable (circuit breaker open); try again shortly."


def stats(*args: str) -> str:
    out = StringIO()
    call_command("runtime_stats", *args, stdout=out)
    return out.getvalue()


def figures(*args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stats("--json", *args))
    return result


@pytest.fixture
def seeded(db: Any) -> None:
    """Four sessions, and for each kind of record some rows now and some three days ago."""
    now = timezone.now()
    old = now - timedelta(days=3)
    for sid in ("new", "old", "idle", "gone"):
        session_create(session_id=sid)
    AgentSession.objects.filter(pk="old").update(created_at=old, last_activity=old)
    AgentSession.objects.filter(pk="idle").update(is_active=False)
    session_delete(session=AgentSession.objects.get(pk="gone"))
    # A turn running now (a lease held), and one whose lease has lapsed.
    AgentSession.objects.filter(pk="new").update(
        turn_owner="w1", turn_expires_at=now + timedelta(seconds=30)
    )
    AgentSession.objects.filter(pk="idle").update(
        turn_owner="w2", turn_expires_at=now - timedelta(seconds=30)
    )

    def audit(event_type: str, when: datetime, **data: Any) -> None:
        AuditEvent.objects.create(
            event_type=event_type, session_id="new", timestamp=when, data=data
        )

    for _ in range(3):
        audit(AuditEvent.Type.MESSAGE_RECEIVED, now)
    audit(AuditEvent.Type.MESSAGE_RECEIVED, old)
    for _ in range(2):
        audit(AuditEvent.Type.ERROR, now, error_type="LLMTimeout", error="The model timed out.")
    audit(AuditEvent.Type.ERROR, now, error_type="LLMUnavailable", error=BREAKER_REFUSAL)
    audit(AuditEvent.Type.TOOL_FAILED, now, tool_name="read_file", error="no such file: a.py")
    for _ in range(5):
        audit(AuditEvent.Type.ERROR, old, error_type="LLMProtocolError", error="garbage")

    LLMRequest.objects.create(
        session_id="new", prompt_tokens=100, completion_tokens=10, duration_ms=300
    )
    LLMRequest.objects.create(
        session_id="new", prompt_tokens=200, completion_tokens=20, duration_ms=100, success=False
    )
    LLMRequest.objects.create(
        session_id="old", prompt_tokens=1000, completion_tokens=1000, started_at=old
    )

    for n, status in enumerate(["completed", "completed", "failed", "awaiting_approval"]):
        ToolCall.objects.create(session_id="new", call_id=f"t{n}", tool_name="x", status=status)
    ToolCall.objects.create(
        session_id="old", call_id="t9", tool_name="x", status="completed", created_at=old
    )

    def approval(call_id: str, status: str, created: datetime) -> None:
        decided = None if status == "pending" else created + timedelta(seconds=5)
        Approval.objects.create(
            session_id="new",
            call_id=call_id,
            tool_name="write_file",
            status=status,
            created_at=created,
            decided_at=decided,
        )

    approval("a1", "pending", now - timedelta(minutes=10))
    approval("a2", "approved", now)
    approval("a3", "rejected", now)
    approval("a4", "approved", now)
    approval("a5", "expired", old)
    approval("a6", "pending", old)  # still pending, but made before the window


def test_it_counts_the_last_24_hours_by_default(seeded):
    data = figures()
    assert data["sessions"] == {
        "total": 3,
        "active": 2,
        "deleted": 1,
        "created": 3,
        "with_activity": 2,
        "turns_running": 1,
    }
    assert data["turns"] == {
        "started": 3,
        "model_calls": 2,
        "failed_model_calls": 1,
        "average_model_call_ms": 200,
    }
    assert data["tokens"] == {"prompt": 300, "completion": 30, "total": 330}
    assert data["tool_calls"] == {"awaiting_approval": 1, "completed": 2, "failed": 1}
    assert data["approvals"]["by_state"] == {
        "pending": 1,
        "approved": 2,
        "edited": 0,
        "rejected": 1,
        "expired": 0,
        "cancelled": 0,
    }
    assert data["approvals"]["pending_now"] == 2
    assert data["approvals"]["oldest_pending_seconds"] >= 3 * 86400
    assert data["breaker"]["refused_calls"] == 1
    assert data["breaker"]["state"] == "open (recently)"
    assert [(e["kind"], e["message"], e["count"]) for e in data["top_errors"]] == [
        ("LLMTimeout", "The model timed out.", 2),
        ("LLMUnavailable", BREAKER_REFUSAL, 1),
        ("tool read_file failed", "no such file: a.py", 1),
    ]


def test_a_wider_window_takes_in_the_older_rows(seeded):
    data = figures("--since", "7d")
    assert data["sessions"]["created"] == 4
    assert data["turns"]["started"] == 4
    assert data["tokens"] == {"prompt": 1300, "completion": 1030, "total": 2330}
    assert data["approvals"]["by_state"]["expired"] == 1
    assert data["approvals"]["by_state"]["pending"] == 2
    assert data["top_errors"][0] == {
        "kind": "LLMProtocolError",
        "message": "garbage",
        "count": 5,
        "last_seen": data["top_errors"][0]["last_seen"],
    }
    since = (timezone.now() - timedelta(days=4)).date().isoformat()
    assert figures("--since", since)["tokens"]["total"] == 2330


def test_the_screen_shows_the_figures_as_plain_text(seeded):
    text = stats()
    assert "\x1b[" not in text  # not a terminal: no escape codes
    for label, value in [
        ("total \\(not deleted\\)", "3"),
        ("active", "2"),
        ("turns running now", "1"),
        ("turns started", "3"),
        ("model calls", "2"),
        ("failed model calls", "1"),
        ("average model call", "200 ms"),
        ("prompt tokens", "300"),
        ("completion tokens", "30"),
        ("approved", "2"),
        ("pending now \\(all\\)", "2"),
        ("oldest pending", "3 days"),
        ("completed", "2"),
    ]:
        assert re.search(rf"\b{label}\s+{value}\b", text), (label, text)
    assert "LLM circuit breaker: open (recently); 1 call(s) refused while open" in text
    assert re.search(r"\s2\s+LLMTimeout\s+\S+\s+The model timed out\.", text)
    assert "garbage" not in text  # three days old


def test_the_breaker_reads_closed_once_the_refusals_are_old(seeded, settings):
    AuditEvent.objects.filter(data__error=BREAKER_REFUSAL).update(
        timestamp=timezone.now() - timedelta(minutes=5)
    )
    settings.LLM_BREAKER_RESET_SECONDS = 30
    assert figures()["breaker"]["state"] == "closed"
    assert figures()["breaker"]["refused_calls"] == 1


@pytest.mark.django_db
def test_an_empty_database_has_zeros_not_errors():
    data = figures("--since", "2020-01-01T00:00:00")
    assert data["window"]["since"] == datetime(2020, 1, 1, tzinfo=UTC).isoformat()
    assert data["tokens"] == {"prompt": 0, "completion": 0, "total": 0}
    assert data["turns"]["average_model_call_ms"] is None
    assert data["top_errors"] == [] and data["tool_calls"] == {}
    assert "none" in stats()


@pytest.mark.django_db
@pytest.mark.parametrize("since", ["bogus", "24x", "2999-01-01"])
def test_a_bad_window_is_a_clear_error(since):
    with pytest.raises(CommandError, match="--since"):
        stats("--since", since)
