"""One error type for the application, its single mapping to HTTP, and Django's error views.

Every error body is ``{"detail": "<english>"}`` (PROTOCOL §1): DRF views go through
``exception_handler``; everything else (unknown URLs, CSRF failures, the admin, a crash) through
the ``handler400``/``403``/``404``/``500`` views below, which ``agent_runtime/urls.py`` installs.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A failure the caller caused or must know about, with an English ``detail``."""

    status = 400
    code = "bad_request"  # a machine word for clients (an error chunk's metadata.code)

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class NotFound(ApplicationError):
    status = 404
    code = "not_found"


class Conflict(ApplicationError):
    status = 409
    code = "conflict"


def too_large_detail() -> str:
    """What a 413 for a request body over MAX_REQUEST_BYTES says."""
    return f"request body too large (limit {settings.MAX_REQUEST_BYTES} bytes)"


def error_response(status: int, detail: str, **headers: str) -> JsonResponse:
    """``{"detail": ...}``; header names may use ``_`` for ``-`` (``Retry_After``)."""
    response = JsonResponse({"detail": detail}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _flatten(detail: Any) -> str:
    """DRF's nested error dicts → one English sentence such as 'limit: Ensure this value ...'."""
    if isinstance(detail, dict):
        parts = []
        for field, value in detail.items():
            text = _flatten(value)
            parts.append(text if field == "non_field_errors" else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error becomes ``{"detail": "<english>"}``."""
    if isinstance(exc, ApplicationError):
        return Response({"detail": exc.detail}, status=exc.status, headers=exc.headers)
    if isinstance(exc, OperationalError | InterfaceError):  # an outage, not a bug: say so
        logger.warning("request refused: database unreachable: %s", exc)
        return Response(
            {"detail": "The database is unreachable; try again in a moment."}, status=503
        )
    if isinstance(exc, Http404):
        return Response({"detail": str(exc) or "Not found."}, status=404)
    if isinstance(exc, Ratelimited):
        return Response(
            {"detail": "rate limit exceeded"}, status=429, headers={"Retry-After": "60"}
        )
    if isinstance(exc, PermissionDenied):
        return Response({"detail": str(exc) or "permission denied"}, status=403)
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": "request body too large"}, status=413)
    if isinstance(exc, DjangoValidationError):
        return Response({"detail": " ".join(exc.messages)}, status=400)
    if isinstance(exc, drf_exceptions.ParseError):
        return Response({"detail": f"malformed JSON body: {exc.detail}"}, status=400)
    if isinstance(exc, drf_exceptions.APIException):
        headers = {}
        wait = getattr(exc, "wait", None)  # only Throttled has it
        if wait:
            headers["Retry-After"] = str(int(wait))
        return Response({"detail": _flatten(exc.detail)}, status=exc.status_code, headers=headers)
    return None


def ratelimited(request: HttpRequest, exception: Exception) -> JsonResponse:
    """RATELIMIT_VIEW: django-ratelimit's 403 is a 429 here."""
    return error_response(429, "rate limit exceeded", Retry_After="60")


def method_not_allowed(request: HttpRequest, *allowed: str) -> JsonResponse:
    """405 for the views that are not DRF's, with the ``Allow`` header DRF would send."""
    return error_response(
        405,
        f"method {request.method} not allowed; use {' or '.join(allowed)}",
        Allow=", ".join(allowed),
    )


# --- Django's error views (handler400/403/404/500 and CSRF_FAILURE_VIEW) ----------------------


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler400: SuspiciousOperation and BadRequest raised outside DRF's handler."""
    if isinstance(exception, RequestDataTooBig):
        # A SuspiciousOperation to Django, but the client needs the status the API uses.
        return error_response(413, "request body too large")
    if isinstance(exception, DisallowedHost):
        return error_response(400, "bad request: the Host header is not one this server serves")
    if isinstance(exception, (TooManyFieldsSent, TooManyFilesSent)):
        return error_response(400, "bad request: too many query or form fields")
    # Other messages may name internals (settings, file names): say only what went wrong.
    return error_response(400, "bad request")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler403: PermissionDenied raised by a view that is not DRF's (the admin's own)."""
    message = exception.args[0] if exception and exception.args else ""
    return error_response(403, message if isinstance(message, str) and message else "forbidden")


# As the last URL pattern it is a view: exempt, or a POST to an unknown URL would fail the
# CSRF check (403) before it could be told that nothing is there.
@csrf_exempt
def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler404, and the last URL pattern: an unknown URL is a JSON 404 even with DEBUG on,
    where Django would draw its HTML page of the patterns it tried instead of calling this."""
    message = exception.args[0] if exception and exception.args else ""
    # Resolver404 carries a dict of the patterns tried, not a sentence for the client.
    if isinstance(message, str) and message:
        return error_response(404, message)
    return error_response(404, f"not found: {request.path}")


def server_error(request: HttpRequest) -> JsonResponse:
    """handler500 (DEBUG off). No templates, no database: it must work when they do not."""
    return error_response(500, "internal server error")


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """CSRF_FAILURE_VIEW: a cookie-authenticated POST (the admin) without a valid token."""
    return error_response(
        403, f"CSRF verification failed: {reason}" if reason else "CSRF verification failed"
    )
