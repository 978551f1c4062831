"""The events endpoints: shapes, filters and that the counters count persisted rows."""

from __future__ import annotations

import pytest

from agents.models import ToolCall
from approvals.models import Approval
from sessions.models import LLMRequest
from sessions.services import audit_record

pytestmark = pytest.mark.django_db


def test_it_serves_empty_metrics_with_the_compat_shape(api):
    data = api.get("/events/metrics").json()
    assert set(data) == {"metrics", "computed", "timestamp"}
    assert set(data["metrics"]) == {
        "agent_switches", "agent_processing", "tool_executions", "hitl_decisions", "errors",
    }  # fmt: skip
    assert all(value == {} for value in data["metrics"].values())


def test_it_counts_what_is_persisted(api, make_session):
    session = make_session("m")
    api.post("/agents/m/switch", {"target_agent": "coder"}, format="json")
    LLMRequest.objects.create(session_id="m", agent="coder", duration_ms=12)
    LLMRequest.objects.create(session_id="m", agent="coder", duration_ms=8, success=False)
    LLMRequest.objects.create(session_id="m", agent="orchestrator", purpose="classify")
    audit_record(event_type="error", session_id="m", agent="coder", error_type="LLMTimeout")
    audit_record(event_type="error", session_id="m", agent="coder", error_type="LLMTimeout")
    ToolCall.objects.create(
        session=session, call_id="c1", tool_name="read_file", status="completed"
    )
    ToolCall.objects.create(
        session=session, call_id="c2", tool_name="write_file", status="awaiting_approval",
        requires_approval=True,
    )  # fmt: skip
    Approval.objects.create(
        session=session, call_id="c2", tool_name="write_file", status="edited",
        decided_at="2026-01-01T00:00:00Z",
    )  # fmt: skip
    metrics = api.get("/events/metrics").json()["metrics"]
    assert metrics["agent_switches"] == {"orchestrator_to_coder": 1}
    assert metrics["agent_processing"]["coder"] == {
        "count": 2, "total_duration_ms": 20, "success_count": 1, "failure_count": 1,
    }  # fmt: skip
    assert metrics["tool_executions"]["read_file"] == {
        "requested": 1, "completed": 1, "failed": 0, "requires_approval": 0,
    }  # fmt: skip
    assert metrics["tool_executions"]["write_file"]["requires_approval"] == 1
    assert metrics["hitl_decisions"] == {"write_file": {"approve": 0, "edit": 1, "reject": 0}}
    assert metrics["errors"] == {"coder": {"LLMTimeout": 2}}
    assert "orchestrator" not in metrics["agent_processing"]  # routing is not a turn


def test_it_filters_the_audit_log(api, make_session):
    make_session("a")
    make_session("b")
    data = api.get("/events/audit-log?session_id=a").json()
    assert data["count"] == 1
    (event,) = data["audit_log"]
    assert {"event_id", "event_type", "timestamp", "session_id", "correlation_id"} <= set(event)
    assert event["event_type"] == "session_created"
    assert data["filters"] == {"session_id": "a", "event_type": None, "limit": 100}
    assert api.get("/events/audit-log?event_type=session_created&limit=1").json()["count"] == 1
    assert api.get("/events/audit-log?event_type=bogus").status_code == 400
    assert api.get("/events/audit-log?limit=0").status_code == 400


def test_it_reports_llm_usage_per_session(api):
    LLMRequest.objects.create(
        session_id="u", agent="coder", duration_ms=100, prompt_tokens=5, completion_tokens=7
    )
    LLMRequest.objects.create(
        session_id="u", agent="coder", duration_ms=50, success=False, error="x"
    )
    data = api.get("/events/metrics/session/u").json()
    assert data["total_requests"] == 2
    assert data["successful_requests"] == 1 and data["failed_requests"] == 1
    assert data["total_duration_ms"] == 150 and data["average_duration_ms"] == 75
    assert data["total_tokens"] == 12
    assert len(data["requests"]) == 2
