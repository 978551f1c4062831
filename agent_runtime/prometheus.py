"""GET /metrics: the event counters in Prometheus' text format, plus live gauges.

Counters come from persisted rows (as /events/metrics), so they survive restarts and agree
across processes; the gauges describe this process.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema

from agent_runtime.errors import method_not_allowed
from agent_runtime.openapi import document, errors
from agents.llm import breaker_state, breaker_states
from approvals.models import Approval
from sessions.selectors import event_metrics

Sample = tuple[dict[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    # Whole numbers exactly: "{:g}" would print 12345679 as 1.23457e+07.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    lines = [f"# HELP agent_runtime_{name} {help_text}", f"# TYPE agent_runtime_{name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        lines.append(
            f"agent_runtime_{name}{{{text}}} {_number(value)}"
            if text
            else f"agent_runtime_{name} {_number(value)}"
        )
    return lines


def render() -> str:
    from agents.turns import running_turns

    data = event_metrics()
    m = data["metrics"]
    lines: list[str] = []
    lines += _family(
        "agent_switches_total",
        "counter",
        "Agent switches, by from and to agent.",
        (
            ({"from_agent": key.split("_to_")[0], "to_agent": key.split("_to_")[1]}, n)
            for key, n in m["agent_switches"].items()
        ),
    )
    lines += _family(
        "agent_runs_total",
        "counter",
        "Model calls made for agents' turns, by agent and outcome.",
        (
            sample
            for agent, p in m["agent_processing"].items()
            for sample in (
                ({"agent": agent, "outcome": "success"}, p["success_count"]),
                ({"agent": agent, "outcome": "failure"}, p["failure_count"]),
            )
        ),
    )
    lines += _family(
        "agent_run_duration_ms_total",
        "counter",
        "Milliseconds spent in model calls for agents' turns.",
        (({"agent": agent}, p["total_duration_ms"]) for agent, p in m["agent_processing"].items()),
    )
    lines += _family(
        "tool_calls_total",
        "counter",
        "Tool calls, by tool and what became of them.",
        (
            ({"tool": tool, "outcome": outcome}, t[outcome])
            for tool, t in m["tool_executions"].items()
            for outcome in ("requested", "completed", "failed", "requires_approval")
        ),
    )
    lines += _family(
        "hitl_decisions_total",
        "counter",
        "Human decisions on approvals, by tool and decision.",
        (
            ({"tool": tool, "decision": decision}, n)
            for tool, d in m["hitl_decisions"].items()
            for decision, n in d.items()
        ),
    )
    lines += _family(
        "errors_total",
        "counter",
        "Errors, by agent and type.",
        (
            ({"agent": agent, "type": kind}, n)
            for agent, kinds in m["errors"].items()
            for kind, n in kinds.items()
        ),
    )
    computed = data["computed"]
    lines += _family(
        "llm_requests_total", "counter", "Calls to the model.", [({}, computed["llm_requests"])]
    )
    lines += _family(
        "llm_tokens_total",
        "counter",
        "Tokens the model reported.",
        [({}, computed["llm_total_tokens"])],
    )
    lines += _family(
        "llm_truncated_replies_total",
        "counter",
        "Model replies that are not whole: cut at the length limit, or a stream that broke.",
        (({"reason": reason}, n) for reason, n in computed["llm_truncated_replies"].items()),
    )
    lines += _family(
        "approvals_pending",
        "gauge",
        "Approvals waiting for a decision.",
        [({}, Approval.objects.pending().count())],
    )
    lines += _family(
        "turns_running", "gauge", "Turns running in this process.", [({}, running_turns())]
    )
    lines += _family(
        "circuit_breaker_open",
        "gauge",
        "1 while this process's LLM circuit breaker is open.",
        [({}, 1 if breaker_state() == "open" else 0)],
    )
    lines += _family(
        "llm_breaker_open",
        "gauge",
        "1 while this process's circuit breaker for the LLM endpoint (host:port) is open.",
        (
            ({"endpoint": name}, 1 if state == "open" else 0)
            for name, state in breaker_states().items()
        ),
    )
    lines += _family(
        "info", "gauge", "Version of the runtime.", [({"version": settings.VERSION}, 1)]
    )
    return "\n".join(lines) + "\n"


# No cookie authenticates it, so CSRF does not apply; checked, a POST would be a 403, not a 405.
@document(
    get=extend_schema(
        summary="Prometheus metrics (text format)",
        tags=["operations"],
        description="No key needed unless `METRICS_REQUIRE_KEY=true`.",
        # The key is optional unless the setting asks for it. (Typed as names; drf-spectacular
        # takes these security requirement objects as they are.)
        auth=[{"InternalAuth": []}, {}],  # type: ignore[list-item]
        responses={
            (200, "text/plain"): OpenApiResponse(
                {"type": "string"}, description="Prometheus text exposition format 0.0.4."
            ),
            **errors(401),
        },
    )
)
@csrf_exempt
def metrics(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request, "GET", "HEAD")
    return HttpResponse(render(), content_type="text/plain; version=0.0.4; charset=utf-8")
