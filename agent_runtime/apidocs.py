"""``/api/schema/`` (the OpenAPI schema) and ``/api/docs/`` (Swagger UI, its assets from
drf-spectacular-sidecar as static files: nothing comes from a CDN).

Public when ``API_DOCS_PUBLIC`` is on (the default under ``DEBUG``); otherwise they need the
``X-Internal-Auth`` key, like the API they describe, or a staff login, so that staff can open the
page in a browser, which sends no such header. (Apart from ``agent_runtime.openapi`` because
drf-spectacular's views import the schema class that module defines.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from agent_runtime.errors import error_response, method_not_allowed
from agent_runtime.middleware import key_is_valid


def _may_read_docs(request: HttpRequest) -> bool:
    if settings.API_DOCS_PUBLIC or key_is_valid(request.headers.get("X-Internal-Auth")):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def _guarded(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Only GET, by the key, a staff login or when public; errors in the API's JSON shape
    (drf-spectacular's views would render theirs as HTML or YAML)."""

    @csrf_exempt  # no cookie-authenticated writes here: anything but GET is a 405
    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not _may_read_docs(request):
            return error_response(401, "unauthorized")
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed(request, "GET", "HEAD")
        return view(request, *args, **kwargs)

    return guarded


schema_view = _guarded(SpectacularAPIView.as_view())
docs_view = _guarded(SpectacularSwaggerView.as_view(url_name="api-schema"))
