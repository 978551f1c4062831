"""``manage.py purge_sessions``: lists what it would delete, and deletes only --for-real."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from sessions.models import AgentSession, AuditEvent, Message
from sessions.services import message_append, session_create, session_delete


@pytest.fixture
def aged(db):
    """'fresh' (in use), 'stale' (idle 40 days), 'binned' (deleted 40 days ago)."""
    long_ago = timezone.now() - timedelta(days=40)
    for sid in ("fresh", "stale", "binned"):
        session_create(session_id=sid)
        message_append(session=sid, role="user", content=f"hello from {sid}")
    AgentSession.objects.filter(pk="stale").update(last_activity=long_ago)
    session_delete(session=AgentSession.objects.get(pk="binned"))
    AgentSession.objects.filter(pk="binned").update(deleted_at=long_ago)


def purge(*args: str) -> str:
    out = StringIO()
    call_command("purge_sessions", "--days", "30", *args, stdout=out)
    return out.getvalue()


def test_a_dry_run_lists_the_sessions_and_deletes_nothing(aged):
    out = purge()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["stale", "idle", "since"]
    assert lines[1].split()[:2] == ["binned", "deleted"]
    assert "1 message(s)  hello from stale" in lines[0]
    assert lines[-1] == "would purge (dry run; add --for-real) 2 session(s) older than 30 day(s)"
    assert AgentSession.objects.count() == 3 and Message.objects.count() == 3


def test_for_real_it_deletes_them_and_keeps_the_audit_log(aged):
    audit_before = AuditEvent.objects.count()
    out = purge("--for-real")
    assert "stale" in out and "binned" in out
    assert out.splitlines()[-1] == "purged 2 session(s) older than 30 day(s)"
    assert list(AgentSession.objects.values_list("pk", flat=True)) == ["fresh"]
    assert list(Message.objects.values_list("session_id", flat=True)) == ["fresh"]
    assert AuditEvent.objects.count() == audit_before
    assert purge("--for-real").splitlines() == ["purged 0 session(s) older than 30 day(s)"]


def test_a_long_list_is_cut_short(db):
    long_ago = timezone.now() - timedelta(days=40)
    for n in range(25):
        session_create(session_id=f"old-{n:02d}")
    AgentSession.objects.update(last_activity=long_ago)
    lines = purge().splitlines()
    assert len(lines) == 22
    assert lines[-2] == "  ... and 5 more"
    assert AgentSession.objects.count() == 25


def test_the_scheduled_purge_deletes_without_a_command(aged, settings):
    from sessions.tasks import purge_sessions

    settings.SESSION_RETENTION_DAYS = 30
    assert purge_sessions() == 2
    assert AgentSession.objects.count() == 1
