"""Auth, size limits, health and the configuration checks."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest
from django.core.checks import run_checks
from django.core.management import call_command

from agent_runtime.checks import check_secrets
from sessions.models import AgentSession

pytestmark = pytest.mark.django_db

LONG_KEY = "a-real-internal-api-key-0123456789"  # 34 characters: long enough with DEBUG off

PROTECTED = [
    ("get", "/sessions"),
    ("post", "/sessions"),
    ("get", "/sessions/x"),
    ("get", "/agents"),
    ("get", "/events/metrics"),
    ("get", "/events/audit-log"),
    ("get", "/events/stats"),
    ("get", "/events/metrics/sessions"),
    ("get", "/events/metrics/session/x"),
    ("post", "/agent/message/stream"),
]


@pytest.mark.parametrize(("method", "url"), PROTECTED)
@pytest.mark.parametrize("key", [None, "", "wrong", "dev-internal-key-but-longer"])
def test_it_refuses_requests_without_the_right_key(anon, method, url, key):
    headers = {} if key is None else {"HTTP_X_INTERNAL_AUTH": key}
    response = getattr(anon, method)(url, **headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "unauthorized"}
    assert not AgentSession.objects.exists()


def test_it_never_logs_the_key(api, caplog, settings):
    with caplog.at_level(logging.DEBUG):
        api.get("/sessions")
        api.get("/sessions/missing")
    assert settings.INTERNAL_API_KEY not in caplog.text


@pytest.mark.django_db(transaction=True)  # its database check is real, on its own connection
def test_it_serves_health_without_a_key(anon):
    response = anon.get("/health")
    assert response.status_code == 200
    data = response.json()
    assert data["service"] == "agent-runtime"
    assert data["status"] in {"healthy", "degraded"}
    assert data["version"]
    assert set(data["checks"]) >= {"database", "channel_layer", "llm", "circuit_breaker"}
    assert data["checks"]["database"]["status"] == "ok"
    assert data["llm_mode"] == "demo"
    assert data["checks"]["llm"]["provider"] == "demo"


def test_it_refuses_bodies_over_the_limit(api, settings):
    settings.MAX_REQUEST_BYTES = 2048
    response = api.post("/sessions", {"title": "x" * 5000}, format="json")
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
    assert not AgentSession.objects.exists()


def test_it_refuses_default_secrets_with_debug_off(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = settings.DEFAULT_SECRET_KEY
    settings.INTERNAL_API_KEY = settings.DEFAULT_INTERNAL_API_KEY
    ids = {e.id for e in check_secrets()}
    assert ids == {"agent_runtime.E001", "agent_runtime.E002"}
    deploy = {e.id for e in run_checks(include_deployment_checks=True)}
    assert {"agent_runtime.E001", "agent_runtime.E002"} <= deploy
    # Not an ordinary check: migrate and createsuperuser must work in a fresh checkout.
    assert "agent_runtime.E001" not in {e.id for e in run_checks()}


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DEBUG"))}
    clean.pop("INTERNAL_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        cwd=settings_module_dir(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def settings_module_dir() -> str:
    from django.conf import settings

    return str(settings.BASE_DIR)


def test_the_server_refuses_to_start_on_default_secrets():
    refused = run_python("import agent_runtime.asgi", DEBUG="false")
    assert refused.returncode != 0
    assert "DJANGO_SECRET_KEY is the built-in development default" in refused.stderr
    short = run_python(
        "import agent_runtime.asgi",
        DEBUG="false",
        DJANGO_SECRET_KEY="a-real-secret-" * 4,
        INTERNAL_API_KEY="a-real-but-short-key",
    )
    assert short.returncode != 0
    assert "INTERNAL_API_KEY is shorter than 32 characters" in short.stderr
    assert "a-real-but-short-key" not in short.stderr
    started = run_python(
        "import agent_runtime.asgi",
        DEBUG="false",
        DJANGO_SECRET_KEY="a-real-secret-" * 4,
        INTERNAL_API_KEY=LONG_KEY,
    )
    assert started.returncode == 0, started.stderr
    assert run_python("import agent_runtime.asgi", DEBUG="true").returncode == 0


def test_it_accepts_real_secrets_or_debug(settings):
    settings.DEBUG = True
    assert check_secrets() == []
    settings.DEBUG = False
    settings.SECRET_KEY = "a-real-secret-" * 4
    settings.INTERNAL_API_KEY = LONG_KEY
    assert check_secrets() == []


@pytest.mark.parametrize(("length", "refused"), [(8, True), (31, True), (32, False), (64, False)])
def test_it_refuses_a_short_api_key_with_debug_off(settings, length, refused):
    settings.DEBUG = False
    settings.SECRET_KEY = "a-real-secret-" * 4
    settings.INTERNAL_API_KEY = "k" * length
    errors = check_secrets()
    assert [e.id for e in errors] == (["agent_runtime.E004"] if refused else [])
    for error in errors:
        assert "k" * length not in f"{error.msg} {error.hint}"
    deploy = {e.id for e in run_checks(include_deployment_checks=True)}
    assert ("agent_runtime.E004" in deploy) is refused
    settings.DEBUG = True
    assert check_secrets() == []


def banner(**options: str) -> str:
    out = io.StringIO()
    call_command("banner", stdout=out, **options)
    return out.getvalue()


def test_the_banner_never_prints_a_real_key(settings):
    settings.INTERNAL_API_KEY = LONG_KEY
    text = banner(host="127.0.0.1", port="8000")
    assert LONG_KEY not in text
    assert "INTERNAL_API_KEY (not shown)" in text
    assert (
        """curl -s -H "X-Internal-Auth: $INTERNAL_API_KEY" -X POST http://127.0.0.1:8000/sessions"""
        in text
    )


def test_the_banner_names_the_development_default(settings):
    settings.INTERNAL_API_KEY = "dev-internal-key"
    text = banner(port="9000")
    assert "dev-internal-key, the development default (set INTERNAL_API_KEY" in text
    assert "curl -s -H 'X-Internal-Auth: dev-internal-key' -X POST http://127.0.0.1:9000" in text


def test_it_flags_an_unsafe_keepalive(settings):
    settings.KEEPALIVE_SECONDS = 30
    assert "agent_runtime.E011" in {e.id for e in run_checks()}


@pytest.mark.parametrize(
    ("mode", "refused"), [("token", False), ("message", False), ("words", True)]
)
def test_it_checks_the_stream_mode(settings, mode, refused):
    settings.STREAM_MODE = mode
    assert ("agent_runtime.E014" in {e.id for e in run_checks()}) is refused
