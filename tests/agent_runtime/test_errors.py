"""Every error body is ``{"detail": "<english>"}`` as JSON, never an HTML page (PROTOCOL §1)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern

from agent_runtime import urls

pytestmark = pytest.mark.django_db

KEY = "dev-internal-key"  # tests run on the development default (DEBUG is off only per test)

# Every endpoint and the methods it answers, written out here rather than read from the views.
ENDPOINTS = {
    "health": ("/health", {"GET"}),
    "ready": ("/ready", {"GET"}),
    "prometheus-metrics": ("/metrics", {"GET"}),
    "sessions": ("/sessions", {"GET", "POST"}),
    "session-detail": ("/sessions/s1", {"GET", "DELETE"}),
    "history": ("/sessions/s1/history", {"GET"}),
    "pending-approvals": ("/sessions/s1/pending-approvals", {"GET"}),
    "session-cancel": ("/sessions/s1/cancel", {"POST"}),
    "session-events": ("/sessions/s1/events", {"GET"}),
    "approval-decision": ("/sessions/s1/approvals/c1/decision", {"POST"}),
    "agents": ("/agents", {"GET"}),
    "agent-current": ("/agents/s1/current", {"GET"}),
    "agent-switch": ("/agents/s1/switch", {"POST"}),
    "metrics": ("/events/metrics", {"GET"}),
    "audit-log": ("/events/audit-log", {"GET"}),
    "session-metrics": ("/events/metrics/session/s1", {"GET"}),
    "event-stats": ("/events/stats", {"GET"}),
    "sessions-with-metrics": ("/events/metrics/sessions", {"GET"}),
    "message-stream": ("/agent/message/stream", {"POST"}),
    "api-schema": ("/api/schema/", {"GET"}),
    "api-docs": ("/api/docs/", {"GET"}),
}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
WRONG_METHODS = [
    (name, url, method)
    for name, (url, allowed) in ENDPOINTS.items()
    for method in METHODS
    if method not in allowed
]


@pytest.fixture
def client(settings: Any) -> Client:
    """A client as real ones are: DEBUG off, and CSRF checked (Django's test client skips it)."""
    settings.DEBUG = False
    return Client(enforce_csrf_checks=True, raise_request_exception=False)


def assert_json_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    return detail


def test_the_method_table_covers_every_endpoint():
    named = {p.name for p in urls.urlpatterns if isinstance(p, URLPattern)} - {"not-found"}
    assert named == set(ENDPOINTS)


@pytest.mark.parametrize(("name", "url", "method"), WRONG_METHODS)
def test_it_answers_a_wrong_method_with_a_json_405(client, name, url, method):
    response = client.generic(method, url, headers={"X-Internal-Auth": KEY})
    assert_json_error(response, 405)
    assert set(response["Allow"].replace(" ", "").split(",")) >= ENDPOINTS[name][1]


@pytest.mark.parametrize(
    ("url", "headers", "status", "says"),
    [
        ("/no/such/endpoint", {}, 401, "unauthorized"),
        ("/no/such/endpoint", {"X-Internal-Auth": KEY}, 404, "not found"),
        ("/sessions/", {"X-Internal-Auth": KEY}, 404, "not found"),
        ("/", {}, 404, "not found"),
        ("/static/no-such-file.css", {}, 404, "not found"),
        # Found by fuzzing; an unbounded offset overflowed the database's OFFSET into a 500.
        ("/sessions?offset=99999999999999999999", {"X-Internal-Auth": KEY}, 400, "offset"),
        ("/sessions?offset=1000000001", {"X-Internal-Auth": KEY}, 400, "offset"),
        ("/sessions?offset=-1", {"X-Internal-Auth": KEY}, 400, "offset"),
        ("/sessions?offset=ten", {"X-Internal-Auth": KEY}, 400, "offset"),
        ("/sessions?limit=99999999999999999999", {"X-Internal-Auth": KEY}, 400, "limit"),
        ("/sessions?limit=-3", {"X-Internal-Auth": KEY}, 400, "limit"),
        ("/sessions?limit=0", {"X-Internal-Auth": KEY}, 400, "limit"),
        ("/sessions?limit=many", {"X-Internal-Auth": KEY}, 400, "limit"),
        ("/sessions?limit=" + "9" * 5000, {"X-Internal-Auth": KEY}, 400, "limit"),
        ("/sessions?" + "a=1&" * 1100, {"X-Internal-Auth": KEY}, 400, "too many"),
        ("/events/audit-log?limit=99999999999999999999", {"X-Internal-Auth": KEY}, 400, "limit"),
        ("/sessions", {"X-Internal-Auth": KEY, "Host": "evil.example"}, 400, "Host"),
    ],
)
def test_it_answers_bad_requests_with_json(client, url, headers, status, says):
    detail = assert_json_error(client.get(url, headers=headers), status)
    assert says in detail


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_an_unknown_url_is_a_404_whatever_the_method(client, method):
    response = client.generic(method, "/no/such/endpoint", headers={"X-Internal-Auth": KEY})
    assert assert_json_error(response, 404) == "not found: /no/such/endpoint"


def test_the_largest_offset_is_an_empty_page(client, make_session):
    make_session("s1")
    response = client.get(
        "/sessions?offset=1000000000&limit=1000", headers={"X-Internal-Auth": KEY}
    )
    assert response.status_code == 200
    assert response.json()["sessions"] == [] and response.json()["total"] == 1


def test_an_unknown_url_is_json_with_debug_on_too(client, settings):
    # Django draws its HTML page of tried patterns instead of calling handler404 then.
    settings.DEBUG = True
    response = client.get("/no/such/endpoint", headers={"X-Internal-Auth": KEY})
    assert assert_json_error(response, 404) == "not found: /no/such/endpoint"


def test_a_nul_anywhere_is_never_a_500(client, make_session):
    # PostgreSQL's text refuses NUL: each of these was a 500 there (found while fuzzing).
    make_session("s1")
    headers = {"X-Internal-Auth": KEY}
    created = client.post(
        "/sessions",
        {"session_id": "s2", "title": "a\x00b"},
        content_type="application/json",
        headers=headers,
    )
    assert created.status_code == 201
    assert created.json()["title"] == "a\ufffdb"
    assert client.get("/events/audit-log?session_id=s%00", headers=headers).status_code == 200
    decided = client.post(
        "/sessions/s1/approvals/c%00/decision",
        {"decision": "approve"},
        content_type="application/json",
        headers=headers,
    )
    assert assert_json_error(decided, 404) == "no approval for call 'c\ufffd' in this session"


@pytest.mark.urls("tests.agent_runtime.failing_urls")
@pytest.mark.parametrize("url", ["/crash", "/api-crash"])
def test_a_failing_view_is_a_json_500(client, url, caplog):
    response = client.get(url, headers={"X-Internal-Auth": KEY})
    assert assert_json_error(response, 500) == "internal server error"
    assert "failed" in caplog.text  # the cause goes to the log, never to the client
    assert "failed" not in response.content.decode()


# --- the admin: its pages stay HTML, its errors are JSON ---------------------------------------


@pytest.fixture
def staff(client: Client) -> User:
    user = User.objects.create_user("carol", is_staff=True)  # staff, no permissions
    client.force_login(user)
    return user


def test_the_admin_pages_stay_html(client, staff):
    response = client.get("/admin/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


def test_an_unknown_admin_url_sends_a_visitor_to_the_login(client):
    response = client.get("/admin/no/such/page/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_an_unknown_admin_url_is_a_json_404_for_staff(client, staff):
    assert_json_error(client.get("/admin/no/such/page/"), 404)


def test_an_admin_page_without_permission_is_a_json_403(client, staff):
    assert_json_error(client.get("/admin/auth/user/"), 403)


def test_a_post_without_a_csrf_token_is_a_json_403(settings, staff):
    settings.DEBUG = False
    browser = Client(enforce_csrf_checks=True, raise_request_exception=False)
    browser.force_login(staff)
    detail = assert_json_error(browser.post("/admin/logout/"), 403)
    assert detail.startswith("CSRF verification failed: ")


def test_an_oversized_admin_form_is_a_json_413(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    assert client.get("/admin/login/").status_code == 200  # sets the CSRF cookie
    response = client.post("/admin/login/", {"username": "x" * 5000, "password": "y"})
    assert_json_error(response, 413)
