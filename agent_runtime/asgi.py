"""ASGI entry point: Django for HTTP, Channels for WebSockets (served by daphne)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agent_runtime.settings")
# Django first: it sets up the apps the routing below imports.
django_asgi_app = get_asgi_application()

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope  # noqa: E402
from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

from agent_runtime.checks import check_limits, check_secrets  # noqa: E402
from agent_runtime.direct import DirectView  # noqa: E402
from agent_runtime.routing import websocket_application  # noqa: E402
from agents import turns  # noqa: E402
from agents.views import message_stream  # noqa: E402

# daphne runs no system checks: refuse here to serve production on development secrets, or
# with a configuration that cannot work.
if problems := check_secrets() + check_limits():
    raise ImproperlyConfigured("; ".join(p.msg for p in problems))

# The admin's assets are served by the app itself so one daphne is a full deployment.
django_http = ASGIStaticFilesHandler(django_asgi_app)
# The hot path, without Django's per-request middleware and threads (agent_runtime/direct.py).
stream_http = DirectView(message_stream)
STREAM_PATH = "/agent/message/stream"


async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"] == STREAM_PATH:
        await stream_http(scope, receive, send)
    else:
        await django_http(scope, receive, send)


router = ProtocolTypeRouter({"http": http, "websocket": websocket_application})


async def application(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    # A decision committed in a sync view's thread starts its turn on this loop.
    turns.serve_on(asyncio.get_running_loop())
    await router(scope, receive, send)
