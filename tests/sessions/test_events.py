"""The events endpoints: shapes, filters and that the counters count persisted rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sessions.models import AuditEvent, LLMRequest

pytestmark = pytest.mark.django_db


def test_it_serves_empty_metrics_with_the_compat_shape(api):
    data = api.get("/events/metrics").json()
    assert set(data) == {"metrics", "computed", "timestamp"}
    assert set(data["metrics"]) == {
        "agent_switches", "agent_processing", "tool_executions", "hitl_decisions", "errors",
    }  # fmt: skip
    assert all(value == {} for value in data["metrics"].values())


def test_it_counts_what_happened_and_never_goes_down(api, make_session):
    from agents.llm import Completion
    from agents.llm import ToolCall as ModelCall
    from agents.services import completion_record, tool_queue_step, tool_result_accept
    from approvals.services import approval_decide
    from sessions.models import AgentSession

    make_session("m")
    api.post("/agents/m/switch", {"target_agent": "coder"}, format="json")
    reply = Completion(
        text="",
        tool_calls=[
            ModelCall("c1", "read_file", '{"path": "a"}'),
            ModelCall("c2", "write_file", '{"path": "b", "content": "x"}'),
        ],
        usage=None,
        finish_reason="tool_calls",
    )
    llm = {"purpose": "turn", "provider": "test", "duration_ms": 12, "success": True, "error": ""}
    completion_record(session_id="m", agent="coder", completion=reply, partial_text="", llm=llm)
    failed = {**llm, "duration_ms": 8, "success": False, "error": "x", "error_type": "LLMTimeout"}
    completion_record(session_id="m", agent="coder", completion=None, partial_text="", llm=failed)
    LLMRequest.objects.create(session_id="m", agent="orchestrator", purpose="classify")
    tool_queue_step(session_id="m")  # c1 goes out
    tool_result_accept(session_id="m", call_id="c1", result="ok", error=None)
    tool_queue_step(session_id="m")  # c2 waits for a human
    approval_decide(
        session_id="m",
        call_id="c2",
        decision="edit",
        modified_arguments={"path": "c", "content": "y"},
        decided_by_kind="staff",
        decided_by="staff:x",
    )
    metrics = api.get("/events/metrics").json()["metrics"]
    assert metrics["agent_switches"] == {"orchestrator_to_coder": 1}
    assert metrics["agent_processing"]["coder"] == {
        "count": 2, "total_duration_ms": 20, "success_count": 1, "failure_count": 1,
    }  # fmt: skip
    assert "orchestrator" not in metrics["agent_processing"]  # routing is not a turn
    assert metrics["tool_executions"] == {
        "read_file": {"requested": 1, "completed": 1, "failed": 0, "requires_approval": 0},
        "write_file": {"requested": 1, "completed": 0, "failed": 0, "requires_approval": 1},
    }
    assert metrics["hitl_decisions"] == {"write_file": {"approve": 0, "edit": 1, "reject": 0}}
    assert metrics["errors"] == {"coder": {"LLMTimeout": 1}}
    # Purging the session deletes its calls, approvals and switches: counters must not drop.
    AgentSession.objects.filter(pk="m").delete()
    assert api.get("/events/metrics").json()["metrics"] == metrics


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
        session_id="u",
        agent="coder",
        model="gpt-x",
        started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        duration_ms=100,
        prompt_tokens=5,
        completion_tokens=7,
        has_tool_calls=True,
    )
    LLMRequest.objects.create(
        session_id="u", agent="coder", duration_ms=51, success=False, error="x"
    )
    LLMRequest.objects.create(session_id="other", duration_ms=9, prompt_tokens=100)
    data = api.get("/events/metrics/session/u").json()
    assert list(data) == [
        "session_id", "total_requests", "successful_requests", "failed_requests",
        "total_duration_ms", "average_duration_ms", "total_prompt_tokens",
        "total_completion_tokens", "total_tokens", "average_tokens_per_request",
        "requests_with_tools", "requests", "truncated_requests",
    ]  # fmt: skip
    assert {k: v for k, v in data.items() if k != "requests"} == {
        "session_id": "u",
        "total_requests": 2,
        "successful_requests": 1,
        "failed_requests": 1,
        "total_duration_ms": 151,
        "average_duration_ms": 75.5,
        "total_prompt_tokens": 5,
        "total_completion_tokens": 7,
        "total_tokens": 12,
        "average_tokens_per_request": 6,
        "requests_with_tools": 1,
        "truncated_requests": 0,
    }
    first, second = data["requests"]
    assert list(first)[:9] == [
        "timestamp", "model", "duration_ms", "prompt_tokens", "completion_tokens",
        "total_tokens", "has_tool_calls", "success", "error",
    ]  # fmt: skip
    assert {k: first[k] for k in list(first)[:9]} == {
        "timestamp": "2026-01-02T03:04:05+00:00",
        "model": "gpt-x",
        "duration_ms": 100,
        "prompt_tokens": 5,
        "completion_tokens": 7,
        "total_tokens": 12,
        "has_tool_calls": True,
        "success": True,
        "error": None,
    }
    assert second["success"] is False and second["error"] == "x"
    assert second["has_tool_calls"] is False


def test_it_answers_404_for_a_session_without_llm_requests(api, make_session):
    make_session("quiet")
    for session_id in ["quiet", "never-existed"]:
        response = api.get(f"/events/metrics/session/{session_id}")
        assert response.status_code == 404, session_id
        assert response.json() == {"detail": f"no LLM requests recorded for session '{session_id}'"}
    malformed = api.get("/events/metrics/session/bad%20id")
    assert malformed.status_code == 404
    assert malformed.json() == {"detail": "session 'bad id' not found"}


def test_it_serves_event_stats_from_the_persisted_events(api):
    assert api.get("/events/stats").json() == {
        "total_published": 0,
        "successful_handlers": 0,
        "failed_handlers": 0,
        "last_event_time": None,
        "success_rate": 0.0,
    }
    for hour, event_type in [(1, "session_created"), (3, "agent_processed"), (2, "error")]:
        AuditEvent.objects.create(
            event_type=event_type, session_id="s", timestamp=datetime(2026, 1, 2, hour, tzinfo=UTC)
        )
    AuditEvent.objects.create(event_type="tool_failed", timestamp=datetime(2025, 1, 1, tzinfo=UTC))
    data = api.get("/events/stats").json()
    assert list(data) == [
        "total_published", "successful_handlers", "failed_handlers", "last_event_time",
        "success_rate",
    ]  # fmt: skip
    assert data == {
        "total_published": 4,
        "successful_handlers": 3,  # a tool failing in the IDE was still handled
        "failed_handlers": 1,
        "last_event_time": "2026-01-02T03:00:00+00:00",
        "success_rate": 0.75,
    }


def test_it_lists_the_sessions_with_llm_requests(api, make_session):
    assert api.get("/events/metrics/sessions").json() == {"sessions": [], "count": 0}
    make_session("quiet")  # no model calls
    for session_id in ["x", "y", "x", "z"]:
        LLMRequest.objects.create(session_id=session_id)
    assert api.get("/events/metrics/sessions").json() == {"sessions": ["x", "y", "z"], "count": 3}


@pytest.mark.parametrize("rows", [1, 30])
def test_the_event_summaries_take_one_query_whatever_the_data(api, django_assert_num_queries, rows):
    for n in range(rows):
        AuditEvent.objects.create(event_type="error" if n % 3 else "message_received")
        LLMRequest.objects.create(session_id=f"s{n}")
    with django_assert_num_queries(1):
        assert api.get("/events/stats").json()["total_published"] == rows
    with django_assert_num_queries(1):
        assert api.get("/events/metrics/sessions").json()["count"] == rows
