"""One error type for the application, and its single mapping to HTTP."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
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
