"""ASGI entry point: Django for HTTP, Channels for WebSockets (served by daphne)."""

from __future__ import annotations

import asyncio
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agent_runtime.settings")
# Django first: it sets up the apps the routing below imports.
django_asgi_app = get_asgi_application()

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope  # noqa: E402
from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

from agent_runtime.checks import check_limits, check_secrets  # noqa: E402
from agent_runtime.routing import websocket_application  # noqa: E402
from agents import turns  # noqa: E402

# daphne runs no system checks: refuse here to serve production on development secrets, or
# with a configuration that cannot work.
if problems := check_secrets() + check_limits():
    raise ImproperlyConfigured("; ".join(p.msg for p in problems))

router = ProtocolTypeRouter(
    {
        # The admin's assets are served by the app itself so one daphne is a full deployment.
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": websocket_application,
    }
)


async def application(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    # A decision committed in a sync view's thread starts its turn on this loop.
    turns.serve_on(asyncio.get_running_loop())
    await router(scope, receive, send)
