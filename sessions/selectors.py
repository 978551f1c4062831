"""Reads for the sessions API: each runs a fixed number of queries whatever the page size."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.utils import timezone

from sessions import rows
from sessions.models import (
    TRUNCATED_REASONS,
    AgentSession,
    AuditEvent,
    LLMRequest,
    Message,
    openai_message,
)


def sessions_to_purge(*, older_than_days: int) -> QuerySet[AgentSession]:
    """Sessions deleted, or idle, for longer than ``older_than_days``: what the purge deletes."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    return AgentSession.objects.filter(
        Q(deleted_at__lt=cutoff) | Q(deleted_at__isnull=True, last_activity__lt=cutoff)
    ).order_by("last_activity", "id")


def session_list(*, limit: int, offset: int, active_only: bool) -> tuple[list[AgentSession], int]:
    qs = AgentSession.objects.active() if active_only else AgentSession.objects.live()
    total = qs.count()
    page = list(
        qs.select_related("agent_context").order_by("-last_activity", "id")[offset : offset + limit]
    )
    return page, total


def session_messages(
    *, session: AgentSession, limit: int | None = None, before: int | None = None
) -> list[Message]:
    """The history in order; with ``limit``, the last ``limit`` messages before seq ``before``."""
    qs = Message.objects.filter(session=session)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    if limit is None:
        return list(qs.order_by("seq"))
    return list(reversed(qs.order_by("-seq")[:limit]))


def llm_messages(*, session_id: str) -> list[dict[str, Any]]:
    """What the model is sent (before the system prompt): the whole history, OpenAI-style."""
    # Every model call reads the whole history: one statement built once (sessions.rows).
    found = rows.select(_HISTORY, [session_id])
    return [
        openai_message(role, content, rows.from_db(Message, "tool_calls", calls), call_id, name)
        for role, content, calls, call_id, name in found
    ]


_HISTORY = (
    'SELECT "role", "content", "tool_calls", "tool_call_id", "name"'
    ' FROM "agent_sessions_message" WHERE "session_id" = %s ORDER BY "seq"'
)


def _audit_counts(event_type: str, *keys: str) -> list[dict[str, Any]]:
    """Audit events of one type, counted by keys of their data."""
    fields = [f"data__{key}" for key in keys]
    rows = AuditEvent.objects.filter(event_type=event_type).values(*fields).annotate(n=Count("id"))
    return [{**{key: row[f"data__{key}"] for key in keys}, "n": row["n"]} for row in rows]


def event_metrics() -> dict[str, Any]:
    """The [compat] counters of GET /events/metrics, all computed from persisted rows.

    They are counted from the audit log and LLM usage, which the purge keeps, so a counter
    never goes down when old sessions (and their switches, calls and approvals) are deleted.
    """
    switches: dict[str, int] = {}
    for row in _audit_counts(AuditEvent.Type.AGENT_SWITCHED, "from_agent", "to_agent"):
        key = f"{row['from_agent']}_to_{row['to_agent']}"
        switches[key] = switches.get(key, 0) + row["n"]

    # One row per model call of a turn: the agents' processing counters.
    processing: dict[str, dict[str, int]] = {}
    for row in (
        LLMRequest.objects.filter(purpose="turn")
        .values("agent")
        .annotate(
            count=Count("id"),
            total_duration_ms=Sum("duration_ms"),
            success_count=Count("id", filter=Q(success=True)),
            failure_count=Count("id", filter=Q(success=False)),
        )
    ):
        processing[row.pop("agent")] = row

    tools: dict[str, dict[str, int]] = {}
    outcomes = {
        AuditEvent.Type.TOOL_REQUESTED: "requested",
        AuditEvent.Type.TOOL_COMPLETED: "completed",
        AuditEvent.Type.TOOL_FAILED: "failed",
        AuditEvent.Type.TOOL_REFUSED: "failed",
        AuditEvent.Type.APPROVAL_REQUESTED: "requires_approval",
    }
    for event_type, outcome in outcomes.items():
        for row in _audit_counts(event_type, "tool_name"):
            entry = tools.setdefault(
                str(row["tool_name"]),
                {"requested": 0, "completed": 0, "failed": 0, "requires_approval": 0},
            )
            entry[outcome] += row["n"]

    decisions: dict[str, dict[str, int]] = {}
    # The decision each HITL audit event records (an approval's status); the other outcomes
    # (expired, cancelled) are not decisions a human made.
    decided = {"approved": "approve", "edited": "edit", "rejected": "reject"}
    for row in _audit_counts(AuditEvent.Type.HITL_DECISION, "tool_name", "decision"):
        if row["decision"] in decided:
            entry = decisions.setdefault(
                str(row["tool_name"]), {"approve": 0, "edit": 0, "reject": 0}
            )
            entry[decided[row["decision"]]] += row["n"]

    errors: dict[str, dict[str, int]] = {}
    for row in (
        AuditEvent.objects.filter(event_type=AuditEvent.Type.ERROR)
        .values("agent", "data__error_type")
        .annotate(n=Count("id"))
    ):
        per_agent = errors.setdefault(row["agent"] or "runtime", {})
        kind = str(row["data__error_type"] or "Error")
        per_agent[kind] = per_agent.get(kind, 0) + row["n"]

    llm = LLMRequest.objects.aggregate(
        n=Count("id"),
        ok=Count("id", filter=Q(success=True)),
        ms=Sum("duration_ms"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        length=Count("id", filter=Q(finish_reason="length")),
        interrupted=Count("id", filter=Q(finish_reason="interrupted")),
    )
    total_switches = sum(switches.values())
    total_processed = sum(p["count"] for p in processing.values())
    computed = {
        "total_agent_switches": total_switches,
        "total_agent_runs": total_processed,
        "agent_success_rate": (
            round(sum(p["success_count"] for p in processing.values()) / total_processed, 4)
            if total_processed
            else None
        ),
        "total_tool_calls": sum(t["requested"] for t in tools.values()),
        "total_hitl_decisions": sum(sum(d.values()) for d in decisions.values()),
        "total_errors": sum(sum(e.values()) for e in errors.values()),
        "llm_requests": llm["n"],
        "llm_success_rate": round(llm["ok"] / llm["n"], 4) if llm["n"] else None,
        "llm_total_tokens": (llm["prompt"] or 0) + (llm["completion"] or 0),
        # Replies that are not whole, by why (TRUNCATED_REASONS).
        "llm_truncated_replies": {"length": llm["length"], "interrupted": llm["interrupted"]},
    }
    return {
        "metrics": {
            "agent_switches": switches,
            "agent_processing": processing,
            "tool_executions": tools,
            "hitl_decisions": decisions,
            "errors": errors,
        },
        "computed": computed,
        "timestamp": timezone.now().isoformat(),
    }


def event_stats() -> dict[str, Any]:
    """GET /events/stats, from the audit log in one query.

    The original counted its in-process event bus's handler runs. Here every event is handled
    by being stored, so "published" is every persisted event, "failed" the events that record
    a failure (type ``error``, recorded for every model call that failed) and "successful"
    the rest.
    """
    row = AuditEvent.objects.aggregate(
        total=Count("id"),
        failed=Count("id", filter=Q(event_type=AuditEvent.Type.ERROR)),
        last=Max("timestamp"),
    )
    successful = row["total"] - row["failed"]
    return {
        "total_published": row["total"],
        "successful_handlers": successful,
        "failed_handlers": row["failed"],
        "last_event_time": row["last"].isoformat() if row["last"] else None,
        # The original's formula: 0.0 before anything happened.
        "success_rate": round(successful / max(row["total"], 1), 3),
    }


def sessions_with_llm_requests() -> list[str]:
    """Ids of the sessions that made model calls, in the order of their first call (one query).

    Usage outlives purged sessions, as the audit log does, so these need not exist any more.
    """
    rows = LLMRequest.objects.values("session_id").annotate(first=Min("id")).order_by("first")
    return [row["session_id"] for row in rows]


def session_llm_usage(*, session_id: str) -> dict[str, Any] | None:
    """GET /events/metrics/session/{id} (one query); None when the session made no model call."""
    requests = list(LLMRequest.objects.filter(session_id=session_id))
    if not requests:
        return None
    total = len(requests)
    ok = sum(1 for r in requests if r.success)
    duration = sum(r.duration_ms for r in requests)
    prompt = sum(r.prompt_tokens for r in requests)
    completion = sum(r.completion_tokens for r in requests)
    return {
        "session_id": session_id,
        "total_requests": total,
        "successful_requests": ok,
        "failed_requests": total - ok,
        "total_duration_ms": duration,
        "average_duration_ms": round(duration / total, 2),
        "total_prompt_tokens": prompt,
        "total_completion_tokens": completion,
        "total_tokens": prompt + completion,
        "average_tokens_per_request": round((prompt + completion) / total, 2),
        "requests_with_tools": sum(1 for r in requests if r.has_tool_calls),
        "requests": [r.to_dict() for r in requests],
        # An extension, after the [compat] keys: replies cut short (length limit, broken stream).
        "truncated_requests": sum(1 for r in requests if r.finish_reason in TRUNCATED_REASONS),
    }
