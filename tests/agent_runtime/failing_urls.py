"""The project's URLs and error handlers plus two views that really fail (the 500 tests)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from agent_runtime import urls as project


def crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a plain view failed")


@api_view(["GET"])
def api_crash(request: Request) -> Response:
    raise RuntimeError("a DRF view failed")


urlpatterns = [path("crash", crash), path("api-crash", api_crash), *project.urlpatterns]

handler400 = project.handler400
handler403 = project.handler403
handler404 = project.handler404
handler500 = project.handler500
