"""GET /metrics in Prometheus' text format."""

from __future__ import annotations

import re

import pytest

from approvals.models import Approval
from sessions.models import LLMRequest
from sessions.services import audit_record

pytestmark = pytest.mark.django_db

LINE = re.compile(r'^agent_runtime_[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+]+$')


def test_it_exposes_the_counters_in_text_format(anon, make_session):
    session = make_session("p")
    audit_record(event_type="tool_requested", session_id="p", tool_name="read_file")
    audit_record(event_type="tool_completed", session_id="p", tool_name="read_file")
    Approval.objects.create(session=session, call_id="c2", tool_name="write_file")
    LLMRequest.objects.create(
        session_id="p", agent="coder", duration_ms=7, prompt_tokens=12_345_678, completion_tokens=1
    )
    audit_record(event_type="error", session_id="p", agent="coder", error_type='Odd"Type')
    response = anon.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    body = response.content.decode()
    for line in body.splitlines():
        assert line.startswith("# ") or LINE.match(line), line
    assert 'agent_runtime_tool_calls_total{tool="read_file",outcome="completed"} 1' in body
    assert 'agent_runtime_agent_runs_total{agent="coder",outcome="success"} 1' in body
    assert 'agent_runtime_errors_total{agent="coder",type="Odd\\"Type"} 1' in body
    assert "agent_runtime_approvals_pending 1" in body
    assert "agent_runtime_llm_tokens_total 12345679" in body  # exact, not 1.23457e+07
    assert "agent_runtime_turns_running 0" in body
    assert "agent_runtime_circuit_breaker_open 0" in body


def test_it_can_require_the_key(anon, api, settings):
    settings.METRICS_REQUIRE_KEY = True
    assert anon.get("/metrics").status_code == 401
    assert api.get("/metrics").status_code == 200
