"""WebSocket routes: the runtime's own path and the one IDEs already use for the Gateway."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.urls import re_path

from agents.consumers import SessionConsumer, UnknownPathConsumer

# django-stubs types re_path's view as a Django view, types-channels wants its own pattern type;
# routing ASGI consumers through re_path is what Channels documents.
websocket_urlpatterns = [
    re_path(r"^ws/(?P<session_id>[^/]+)$", SessionConsumer.as_asgi()),  # type: ignore[arg-type]
    re_path(r"^api/v1/ws/(?P<session_id>[^/]+)$", SessionConsumer.as_asgi()),  # type: ignore[arg-type]
    re_path(r"", UnknownPathConsumer.as_asgi()),  # type: ignore[arg-type]
]

# Session auth lets a logged-in staff member's browser connect; no AllowedHostsOriginValidator,
# because IDEs send no Origin at all (the consumer checks the origin of cookie logins only).
websocket_application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))  # type: ignore[arg-type]
