"""What the runtime did over a window, from what it stores: ``manage.py runtime_stats``.

Every figure comes from persisted rows, so it covers every server process and survives
restarts: sessions and their turn leases, the audit log (turns, errors; kept after a purge),
LLM usage records (model calls, tokens), tool calls and approvals. The circuit breaker lives in
each server process's memory; what is stored is the calls it refused (``LLMUnavailable``
errors), so that is what is reported, with each process's live state at ``GET /health``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, Max, Min, Q, Sum
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from agents.llm.base import LLMUnavailable
from agents.models import ToolCall
from approvals.models import Approval
from sessions.models import AgentSession, AuditEvent, LLMRequest

TOP_ERRORS = 5
ERROR_TEXT_CHARS = 120
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: datetime) -> datetime:
    """``24h``, ``7d``, ``30m``, ``90s``, ``2w``, or an ISO date or date-time (UTC unless it
    says otherwise). ValueError for anything else or a time in the future."""
    text = text.strip()
    if match := re.fullmatch(r"(\d+)\s*([smhdw])", text):
        return now - timedelta(seconds=int(match[1]) * UNITS[match[2]])
    moment = parse_datetime(text)
    if moment is None and (day := parse_date(text)) is not None:
        moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if moment is None:
        raise ValueError(
            f"--since {text!r}: expected a duration such as 24h, 7d, 30m, or an ISO date/time."
        )
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    if moment > now:
        raise ValueError(f"--since {text!r} is in the future.")
    return moment


def _by(rows: Any, key: str) -> dict[str, int]:
    return {row[key]: row["n"] for row in rows.values(key).annotate(n=Count("id")).order_by(key)}


def runtime_stats(*, since: datetime, now: datetime | None = None) -> dict[str, Any]:
    """The figures of one screen; a fixed number of queries whatever the data."""
    now = now or timezone.now()
    window = {"since": since.isoformat(), "until": now.isoformat()}

    sessions = AgentSession.objects.aggregate(
        total=Count("id", filter=Q(deleted_at__isnull=True)),
        active=Count("id", filter=Q(deleted_at__isnull=True, is_active=True)),
        deleted=Count("id", filter=Q(deleted_at__isnull=False)),
        created=Count("id", filter=Q(created_at__gte=since)),
        with_activity=Count("id", filter=Q(deleted_at__isnull=True, last_activity__gte=since)),
        turns_running=Count("id", filter=~Q(turn_owner="") & Q(turn_expires_at__gt=now)),
    )

    audit = AuditEvent.objects.filter(timestamp__gte=since)
    llm = LLMRequest.objects.filter(started_at__gte=since).aggregate(
        calls=Count("id"),
        failed=Count("id", filter=Q(success=False)),
        average_ms=Avg("duration_ms"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
    )
    turns = {
        "started": audit.filter(event_type=AuditEvent.Type.MESSAGE_RECEIVED).count(),
        "model_calls": llm["calls"],
        "failed_model_calls": llm["failed"],
        "average_model_call_ms": round(llm["average_ms"])
        if llm["average_ms"] is not None
        else None,
    }
    prompt, completion = llm["prompt"] or 0, llm["completion"] or 0
    tokens = {"prompt": prompt, "completion": completion, "total": prompt + completion}

    tool_calls = _by(ToolCall.objects.filter(created_at__gte=since), "status")

    by_state = dict.fromkeys(Approval.Status.values, 0)
    by_state.update(_by(Approval.objects.filter(created_at__gte=since), "status"))
    pending = Approval.objects.pending().aggregate(n=Count("id"), oldest=Min("created_at"))
    approvals = {
        "by_state": by_state,
        "pending_now": pending["n"],
        "oldest_pending_seconds": (
            int((now - pending["oldest"]).total_seconds()) if pending["oldest"] else None
        ),
    }

    errors = audit.filter(event_type=AuditEvent.Type.ERROR)
    refused = errors.filter(data__error_type=LLMUnavailable.__name__).aggregate(
        n=Count("id"), last=Max("timestamp")
    )
    last = refused["last"]
    recently = last is not None and (now - last).total_seconds() < (
        settings.LLM_BREAKER_RESET_SECONDS
    )
    breaker = {
        "refused_calls": refused["n"],
        "last_refusal": last.isoformat() if last else None,
        # Open now somewhere, as far as the records tell: a refusal within the reset timeout.
        "state": "open (recently)" if recently else "closed",
    }

    return {
        "window": window,
        "sessions": sessions,
        "turns": turns,
        "tokens": tokens,
        "tool_calls": tool_calls,
        "approvals": approvals,
        "breaker": breaker,
        "top_errors": _top_errors(audit),
    }


def _top_errors(audit: Any) -> list[dict[str, Any]]:
    """Failed model calls (by error type and message) and failed tool calls (by tool and
    message), most frequent first."""
    found: list[dict[str, Any]] = []
    for row in (
        audit.filter(event_type=AuditEvent.Type.ERROR)
        .values("data__error_type", "data__error")
        .annotate(n=Count("id"), last=Max("timestamp"))
    ):
        found.append(
            {
                "kind": str(row["data__error_type"] or "Error"),
                "message": str(row["data__error"] or ""),
                "count": row["n"],
                "last_seen": row["last"],
            }
        )
    for row in (
        audit.filter(event_type=AuditEvent.Type.TOOL_FAILED)
        .values("data__tool_name", "data__error")
        .annotate(n=Count("id"), last=Max("timestamp"))
    ):
        found.append(
            {
                "kind": f"tool {row['data__tool_name']} failed",
                "message": str(row["data__error"] or ""),
                "count": row["n"],
                "last_seen": row["last"],
            }
        )
    found.sort(key=lambda e: (-e["count"], -e["last_seen"].timestamp(), e["kind"]))
    return [
        {
            **entry,
            "message": _shorten(entry["message"]),
            "last_seen": entry["last_seen"].isoformat(),
        }
        for entry in found[:TOP_ERRORS]
    ]


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_TEXT_CHARS else text[: ERROR_TEXT_CHARS - 1] + "…"
