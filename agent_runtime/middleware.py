"""X-Internal-Auth on every endpoint but the public ones, and the request size limit."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from agent_runtime.errors import error_response, too_large_detail

# The schema and its page (agent_runtime/apidocs.py), which also admit a staff login.
API_DOCS_PATHS = ("/api/schema/", "/api/docs/")


def key_is_valid(presented: str | None) -> bool:
    """Constant-time comparison with the configured key; never logs either side."""
    if not presented:
        return False
    return hmac.compare_digest(presented.encode(), settings.INTERNAL_API_KEY.encode())


class InternalAuthMiddleware:
    """Works in both sync and async stacks so the streaming view stays on the event loop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        refusal = self.refuse(request)
        if self.is_async:
            return self._acall(request, refusal)
        return refusal or self.get_response(request)

    async def _acall(self, request: HttpRequest, refusal: HttpResponse | None) -> HttpResponse:
        return refusal or await self.get_response(request)

    @staticmethod
    def refuse(request: HttpRequest) -> HttpResponse | None:
        if request.path == "/" or request.path.startswith(settings.PUBLIC_PATH_PREFIXES):
            return None
        if request.path == "/metrics" and not settings.METRICS_REQUIRE_KEY:
            return None
        if request.path in API_DOCS_PATHS:  # their views check the key or a staff login
            return None
        if not key_is_valid(request.headers.get("X-Internal-Auth")):
            return error_response(401, "unauthorized")
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > settings.MAX_REQUEST_BYTES:
            return error_response(413, too_large_detail())
        return None
