"""WebSocket routes: the runtime's own path and the one IDEs already use for the Gateway."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.urls import re_path

from sessions.consumers import SessionConsumer

websocket_urlpatterns = [
    re_path(r"^ws/(?P<session_id>[^/]+)$", SessionConsumer.as_asgi()),
    re_path(r"^api/v1/ws/(?P<session_id>[^/]+)$", SessionConsumer.as_asgi()),
]

# Session auth lets a logged-in staff member's browser connect; no AllowedHostsOriginValidator,
# because IDEs send no Origin at all (the consumer checks the origin of cookie logins only).
websocket_application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
