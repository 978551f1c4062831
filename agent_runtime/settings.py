"""Settings for agent-runtime, read from the environment.

Every production service is one variable (``DATABASE_URL``, ``REDIS_URL``, ``LLM_BASE_URL``);
with none of them set the server runs on embedded defaults: SQLite, an in-memory channel layer,
a local-memory cache and the built-in demo model. The README documents every variable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"

# The defaults that a production deployment must override (see checks.py).
DEFAULT_SECRET_KEY = "insecure-dev-secret-key-change-me"  # noqa: S105
DEFAULT_INTERNAL_API_KEY = "dev-internal-key"


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", DEFAULT_SECRET_KEY)
INTERNAL_API_KEY = env_str("INTERNAL_API_KEY", DEFAULT_INTERNAL_API_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",  # first, so its runserver wins
    # Before rest_framework, so its generateschema (drf-spectacular's) wins over DRF's.
    "agent_runtime.apps.AgentRuntimeConfig",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the docs page's assets, served from here: no CDN
    "channels",
    "django_q",
    "sessions.apps.SessionsConfig",
    "agents.apps.AgentsConfig",
    "approvals.apps.ApprovalsConfig",
    "playground.apps.PlaygroundConfig",
]

MIDDLEWARE = [
    "agent_runtime.middleware.InternalAuthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "agent_runtime.urls"
ASGI_APPLICATION = "agent_runtime.asgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# SQLite needs WAL and IMMEDIATE transactions or concurrent writers (daphne + qcluster) lose
# writes to "database is locked".
SQLITE_OPTIONS = {
    "timeout": 20,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_health_checks=True)}
# PostgreSQL: one bounded pool per server process (psycopg's, built into Django). A connection
# is taken for each database call and given back right after it, so however many turns, event
# streams and sockets are open, a process holds at most DB_POOL_MAX_SIZE connections, and none
# while it waits on the model, a human or a socket. Sizing: README, "Sizing PostgreSQL".
# django-q2's cluster forks its workers, and a pool (its connections and threads) does not
# survive a fork: its few processes keep one plain connection each.
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 20)
_FORKING_COMMANDS = {"qcluster", "runqcluster"}
USES_POOL = (
    DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    and DB_POOL_MAX_SIZE > 0
    and not (len(sys.argv) > 1 and sys.argv[1] in _FORKING_COMMANDS)
)
if USES_POOL:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them; Django must give them back
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": min(2, DB_POOL_MAX_SIZE),
            "max_size": DB_POOL_MAX_SIZE,
            # How long a database call waits for a free connection before it fails.
            "timeout": env_float("DB_POOL_TIMEOUT", 5.0),
            "max_idle": 60.0,  # idle connections above min_size close after a minute
            # After an outage, give up a backing-off reconnection quickly: the next call then
            # tries at once, so the process is usable as soon as the database is back.
            "reconnect_timeout": 2.0,
            "name": "agent-runtime",
        }
    }
else:
    # Kept (and health-checked) between requests: opening one per database call costs more
    # than the call, and closing SQLite's last connection checkpoints the WAL each time.
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = dict(SQLITE_OPTIONS)
else:
    # An unreachable server fails a call within seconds instead of hanging it.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 5
# A turn's database calls retry through an outage this long before the client gets an error.
DB_RETRY_SECONDS = env_float("DB_RETRY_SECONDS", 10.0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, task queue --------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # Fail fast when Redis is unreachable, never hang a request or a socket on it
                # (reads block up to 5 s by design in channels_redis, hence the longer timeout).
                "hosts": [
                    {"address": REDIS_URL, "socket_connect_timeout": 2, "socket_timeout": 10}
                ],
                "prefix": env_str("CHANNEL_PREFIX", "agent-runtime"),
                "capacity": 1000,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_PREFIX", "agent-runtime"),
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1000},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# django-q2 names its Redis keys after the cluster name (`django_q:<name>:q` is the queue,
# `django_q:<name>:cluster:*` the workers' stats), so the name carries the deployment's prefix as
# the channel layer's and the cache's keys do: two deployments on one Redis must never take each
# other's tasks. It follows CACHE_PREFIX unless set, so one prefix set per deployment suffices.
Q_PREFIX = env_str("Q_PREFIX") or env_str("CACHE_PREFIX", "agent-runtime")
Q_CLUSTER = {
    "name": Q_PREFIX,
    "workers": env_int("Q_WORKERS", 2),
    "timeout": 120,
    "retry": 180,
    "catch_up": False,
    "label": "Tasks",
    "sync": env_bool("Q_SYNC", False),
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- HTTP, auth and limits ----------------------------------------------------------------------
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
# Paths served without X-Internal-Auth: operators' probes, the admin and the playground (the
# admin's login) and assets.
PUBLIC_PATH_PREFIXES = ("/health", "/ready", "/admin/", "/playground/", "/static/")
# GET /metrics (Prometheus) is public too unless METRICS_REQUIRE_KEY is set: scrapers rarely
# send custom headers, and it shows counts, never content.
METRICS_REQUIRE_KEY = env_bool("METRICS_REQUIRE_KEY", False)

RATELIMIT_ENABLE = env_bool("RATELIMIT_ENABLE", True)
RATE_LIMIT_MESSAGES = env_str("RATE_LIMIT_MESSAGES", "120/m")
RATELIMIT_VIEW = "agent_runtime.errors.ratelimited"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "agent_runtime.jsonbody.SafeJSONParser",
        "agent_runtime.jsonbody.AnyJSONParser",
    ],
    "EXCEPTION_HANDLER": "agent_runtime.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "agent_runtime.openapi.AutoSchema",
}

# --- API docs: the OpenAPI schema (/api/schema/) and its page (/api/docs/) ----------------------
# Public (no key) under DEBUG, as `make run` starts it; otherwise the X-Internal-Auth key or a
# staff login is needed unless API_DOCS_PUBLIC says otherwise (agent_runtime/apidocs.py).
API_DOCS_PUBLIC = env_bool("API_DOCS_PUBLIC", DEBUG)
SPECTACULAR_SETTINGS = {
    "TITLE": "agent-runtime",
    "DESCRIPTION": (
        "REST and SSE endpoints of the agent runtime. Every endpoint but the public ones "
        "takes the `X-Internal-Auth` header (*Authorize*); every error body is "
        '`{"detail": "English text"}`. The whole wire contract, the WebSocket included, is '
        "`docs/protocol.md` in the project."
    ),
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    # 3.1: an event stream's schema can say that each event's data is a chunk (contentSchema).
    "OAS_VERSION": "3.1.0",
    # A string that may not be blank says so (minLength 1), as the input serializers enforce.
    "ENFORCE_NON_BLANK_FIELDS": True,
    # Shipped by drf-spectacular-sidecar and served as static files: the page works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge fetched from validator.swagger.io: nothing leaves the machine.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # Auth is a header every endpoint but a few public ones checks (InternalAuthMiddleware).
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "InternalAuth": {"type": "apiKey", "in": "header", "name": "X-Internal-Auth"}
        }
    },
    "SECURITY": [{"InternalAuth": []}],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "agent_runtime.openapi.finish",
    ],
    # Choice sets that share a field name get names of their own, not hashed ones.
    "ENUM_NAME_OVERRIDES": {
        "ApprovalStatusEnum": "approvals.models.Approval.Status",
        "ApproveOrRejectEnum": ["approve", "reject"],
        "EditEnum": ["edit"],
        "HitlDecisionTypeEnum": ["hitl_decision"],
    },
}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
# A failed CSRF check (the admin's forms) answers JSON like every other error, not Django's page.
CSRF_FAILURE_VIEW = "agent_runtime.errors.csrf_failure"

# --- Agents, tools, approvals -------------------------------------------------------------------
MULTI_AGENT_MODE = env_bool("MULTI_AGENT_MODE", True)
MAX_AGENT_SWITCHES = env_int("MAX_AGENT_SWITCHES", 50)
# Model calls one request may make (refused tools and internal hand-offs each cost one).
MAX_LLM_ROUNDS_PER_REQUEST = env_int("MAX_LLM_ROUNDS_PER_REQUEST", 8)
APPROVAL_REQUIRED_TOOLS = env_list(
    "APPROVAL_REQUIRED_TOOLS", ["write_file", "create_directory", "execute_command"]
)
APPROVAL_TTL_SECONDS = env_int("APPROVAL_TTL_SECONDS", 24 * 3600)
APPROVAL_FEEDBACK_MAX_CHARS = env_int("APPROVAL_FEEDBACK_MAX_CHARS", 4000)
# Embedded defaults only (no REDIS_URL): how often the server process itself expires approvals.
APPROVAL_EXPIRY_INTERVAL_SECONDS = env_float("APPROVAL_EXPIRY_INTERVAL_SECONDS", 30.0)
TOOL_POLICY = env_str("TOOL_POLICY", "agents.policy.DefaultToolPolicy")
# Where the IDE's project lives, as the IDE names it. Unset: tools bound by a file rule (the
# architect's *.md) take relative paths only; set: absolute paths inside it too.
WORKSPACE_ROOT = env_str("WORKSPACE_ROOT")
ORCHESTRATOR_TIMEOUT_SECONDS = env_float("ORCHESTRATOR_TIMEOUT_SECONDS", 3.0)

# --- Streaming and turns ------------------------------------------------------------------------
KEEPALIVE_SECONDS = env_float("KEEPALIVE_SECONDS", 10.0)
# token: each model reply streamed delta by delta; message: each reply as one chunk, for
# clients that draw every frame as a bubble of its own (PROTOCOL §3.2).
STREAM_MODE = env_str("STREAM_MODE", "token").strip().lower()
TURN_LOCK_TTL_SECONDS = env_float("TURN_LOCK_TTL_SECONDS", 30.0)
TURN_LOCK_WAIT_SECONDS = env_float("TURN_LOCK_WAIT_SECONDS", 10.0)
SESSION_RETENTION_DAYS = env_int("SESSION_RETENTION_DAYS", 30)

# --- The LLM hop --------------------------------------------------------------------------------
LLM_BASE_URL = env_str("LLM_BASE_URL").rstrip("/")
LLM_API_KEY = env_str("LLM_API_KEY")
LLM_MODEL = env_str("LLM_MODEL", "gpt-4o-mini")
# Send X-Internal-Auth to the LLM too (the Gateway's companion LLM proxy wants it).
LLM_SEND_INTERNAL_AUTH = env_bool("LLM_SEND_INTERNAL_AUTH", False)
LLM_CONNECT_TIMEOUT = env_float("LLM_CONNECT_TIMEOUT", 5.0)
LLM_FIRST_BYTE_TIMEOUT = env_float("LLM_FIRST_BYTE_TIMEOUT", 60.0)
LLM_IDLE_TIMEOUT = env_float("LLM_IDLE_TIMEOUT", 30.0)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2)
LLM_RETRY_BASE_DELAY = env_float("LLM_RETRY_BASE_DELAY", 0.5)
LLM_RETRY_MAX_DELAY = env_float("LLM_RETRY_MAX_DELAY", 8.0)
LLM_BREAKER_FAIL_MAX = env_int("LLM_BREAKER_FAIL_MAX", 5)
LLM_BREAKER_RESET_SECONDS = env_float("LLM_BREAKER_RESET_SECONDS", 30.0)
LLM_MAX_TOKENS = env_int("LLM_MAX_TOKENS", 0)  # 0: let the provider decide
# tool_choice sent with the tools: auto | required | none | omit (see agents.engine).
LLM_TOOL_CHOICE = env_str("LLM_TOOL_CHOICE", "auto").lower()
# What the model is sent of a long session (agents.context): the model's window in tokens, less
# a reserve for its answer (0: LLM_MAX_TOKENS if set, else a quarter of the window, at most
# 4096). LLM_CONTEXT_CHARS is the older setting, read as 4 characters per token when
# LLM_CONTEXT_TOKENS is unset.
LLM_CONTEXT_CHARS = env_int("LLM_CONTEXT_CHARS", 0)
LLM_CONTEXT_TOKENS = env_int("LLM_CONTEXT_TOKENS", LLM_CONTEXT_CHARS // 4 or 100_000)
LLM_ANSWER_RESERVE_TOKENS = env_int("LLM_ANSWER_RESERVE_TOKENS", 0)
# > 0: what no longer fits is summarised by a model call, in about this many tokens, kept in
# the request's system prompt (room for it is kept). 0 (default): a note says it was left out.
LLM_SUMMARY_TOKENS = env_int("LLM_SUMMARY_TOKENS", 0)
LLM_TOOL_OUTPUT_CHARS = env_int("LLM_TOOL_OUTPUT_CHARS", 60_000)

# --- I18n, static, logging ----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # httpx logs every request at INFO: one line per model call is noise, not signal.
    "loggers": {"django.server": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}
