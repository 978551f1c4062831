"""HTTP routes. The paths are PROTOCOL §2 and §3 exactly (no trailing slashes).

Errors anywhere are JSON (PROTOCOL §1): Django calls the ``handler*`` views below for exceptions
no view turned into a response, and ``CSRF_FAILURE_VIEW`` (settings) for a failed CSRF check.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path

from agent_runtime import apidocs, errors, health, prometheus
from agents import api as agents_api
from agents import views as stream_views
from approvals import api as approvals_api
from sessions import api as sessions_api

urlpatterns = [
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("metrics", prometheus.metrics, name="prometheus-metrics"),
    path("sessions", sessions_api.sessions_collection, name="sessions"),
    path("sessions/<str:session_id>", sessions_api.session_detail, name="session-detail"),
    path("sessions/<str:session_id>/history", sessions_api.session_history, name="history"),
    path(
        "sessions/<str:session_id>/pending-approvals",
        approvals_api.pending_approvals,
        name="pending-approvals",
    ),
    path("sessions/<str:session_id>/cancel", stream_views.session_cancel, name="session-cancel"),
    path("sessions/<str:session_id>/events", stream_views.session_events, name="session-events"),
    path(
        "sessions/<str:session_id>/approvals/<str:call_id>/decision",
        approvals_api.approval_decision,
        name="approval-decision",
    ),
    path("agents", agents_api.agents_list, name="agents"),
    path("agents/<str:session_id>/current", agents_api.agent_current, name="agent-current"),
    path("agents/<str:session_id>/switch", agents_api.agent_switch, name="agent-switch"),
    path("events/metrics", sessions_api.metrics, name="metrics"),
    path("events/audit-log", sessions_api.audit_log, name="audit-log"),
    path("events/stats", sessions_api.event_stats, name="event-stats"),
    path(
        "events/metrics/sessions", sessions_api.sessions_with_metrics, name="sessions-with-metrics"
    ),
    path(
        "events/metrics/session/<str:session_id>",
        sessions_api.session_metrics,
        name="session-metrics",
    ),
    path("agent/message/stream", stream_views.message_stream, name="message-stream"),
    path("api/schema/", apidocs.schema_view, name="api-schema"),
    path("api/docs/", apidocs.docs_view, name="api-docs"),
    path("admin/", admin.site.urls),
    path("playground/", include("playground.urls")),
    # Last: whatever no pattern above matched. Django shows its HTML 404 page instead of
    # handler404 when DEBUG is on (as under `make run`), and clients are owed JSON there too.
    re_path(r"", errors.not_found, name="not-found"),
]

handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.not_found
handler500 = errors.server_error
