"""The OpenAPI schema (/api/schema/) and its docs page (/api/docs/)."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests import ide_union

pytestmark = pytest.mark.django_db

KEY = "dev-internal-key"
# Served by Django but not the API: the admin (HTML for staff), the schema and its page, and the
# catch-all that answers unknown URLs with a JSON 404.
NOT_API = {"api-schema", "api-docs", "not-found"}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def schema() -> dict[str, Any]:
    out = io.StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    return dict(json.loads(out.getvalue()))


def api_routes() -> list[tuple[str, str]]:
    """(name, route) of every URL pattern of the API, read from the urlconf itself."""
    routes = []
    for pattern in get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):  # the admin
            continue
        assert isinstance(pattern, URLPattern)
        if pattern.name not in NOT_API:
            routes.append((str(pattern.name), str(pattern.pattern)))
    return routes


def openapi_path(route: str) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_the_schema_is_valid_openapi_with_no_warnings(tmp_path):
    # --validate checks it against the OpenAPI 3.1 meta-schema; --fail-on-warn fails on any
    # view or field drf-spectacular could not describe.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml")
    )
    document = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["InternalAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Internal-Auth",
    }


def test_generateschema_writes_the_schema_spectacular_does():
    ours, theirs = io.StringIO(), io.StringIO()
    call_command("generateschema", stdout=ours)
    call_command("spectacular", stdout=theirs)
    assert ours.getvalue() == theirs.getvalue()
    assert "/agent/message/stream:" in ours.getvalue()


def test_the_schema_covers_every_endpoint_of_the_urlconf():
    paths = schema()["paths"]
    routes = api_routes()
    assert len(routes) >= 19  # the urlconf really was read
    missing = [name for name, route in routes if openapi_path(route) not in paths]
    assert missing == [], f"endpoints missing from the schema: {missing}"
    assert len(paths) == len(routes)  # and nothing documented that is not served


@pytest.mark.django_db(transaction=True)  # /health and /ready check the database for real
def test_the_schema_documents_every_method_each_endpoint_answers():
    """Asked, not read from the views: every method that is not a 405 must be documented."""
    paths = schema()["paths"]
    client = Client(raise_request_exception=False)
    for _, route in api_routes():
        path = openapi_path(route)
        url = path.format(session_id="no-such-session", call_id="no-such-call")
        answered = {
            method
            for method in METHODS
            if client.generic(method, url, headers={"X-Internal-Auth": KEY}).status_code != 405
        }
        documented = {method.upper() for method in paths[path]}
        assert documented == answered, path


def test_every_operation_documents_its_errors_in_the_one_json_shape():
    document = schema()
    assert document["components"]["schemas"]["Error"]["required"] == ["detail"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            errors = {code for code in operation["responses"] if code.startswith(("4", "5"))}
            if operation.get("security"):
                assert "401" in errors, f"{method} {path}"
            for code in errors - {"503"}:  # /health's 503 is its own report
                content = operation["responses"][code]["content"]
                assert content["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }, f"{method} {path} {code}"


def test_the_stream_endpoint_documents_its_body_and_its_event_stream():
    document = schema()
    operation = document["paths"]["/agent/message/stream"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    assert body["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/StreamRequest"}}
    }
    stream = document["components"]["schemas"]["StreamRequest"]
    assert sorted(stream["required"]) == ["message", "session_id"]
    components = document["components"]["schemas"]

    def deref(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return deref(components[node["$ref"].rsplit("/", 1)[1]])
        if "allOf" in node:
            return deref(node["allOf"][0])
        return node

    variants = [deref(ref) for ref in components["ClientMessage"]["oneOf"]]
    kinds = [deref(v["properties"]["type"])["enum"] for v in variants]
    assert sorted(kind for enum in kinds for kind in enum) == [
        "hitl_decision",
        "hitl_decision",  # approve/reject, and edit (which needs modified_arguments)
        "switch_agent",
        "tool_result",
        "user_message",
    ]
    decisions = [v for v in variants if "decision" in v["properties"]]
    edit = next(v for v in decisions if deref(v["properties"]["decision"])["enum"] == ["edit"])
    assert "modified_arguments" in edit["required"]
    event = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert event["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/Chunk"}
    chunk = document["components"]["schemas"]["Chunk"]
    # Held to the IDE's decoder (tests/ide_union.py), written out from the protocol: every key,
    # always, each of the type the IDE reads.
    assert chunk["required"] == list(ide_union.KEYS)
    props = chunk["properties"]
    assert props["type"]["enum"] == list(ide_union.TYPES)
    for key in ide_union.STRINGS:
        assert props[key]["type"] == ["string", "null"], key
    for key in ide_union.BOOLEANS:
        assert props[key]["type"] == "boolean", key
    for key in ide_union.OBJECTS:
        assert props[key]["type"] == ["object", "null"], key
    confidence = props["metadata"]["properties"]["confidence"]["enum"]
    assert confidence == [*ide_union.CONFIDENCE_LEVELS, None]


def test_public_endpoints_need_no_key_and_the_rest_do():
    paths = schema()["paths"]
    public = {
        path
        for path, ops in paths.items()
        if not ops["get" if "get" in ops else "post"].get("security")
    }
    assert public == {"/health", "/ready"}
    assert paths["/metrics"]["get"]["security"] == [{"InternalAuth": []}, {}]  # optional


# --- the page ------------------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.urls.append(value)


def page_assets(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def test_the_docs_page_loads_only_local_assets():
    response = Client().get("/api/docs/", headers={"X-Internal-Auth": KEY})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assets = page_assets(html)
    assert len(assets) == 4, assets  # favicon, stylesheet, two scripts
    for url in assets:
        assert url.startswith("/static/drf_spectacular_sidecar/"), url
        # Shipped with the project (the sidecar), so the static files handler can serve it.
        assert finders.find(url.removeprefix("/static/")), url
    assert "://" not in html  # no other host, not even in the inline script
    assert '"validatorUrl": null' in html  # Swagger UI's badge would fetch one
    assert "/api/schema/" in html


@pytest.mark.parametrize("url", ["/api/docs/", "/api/schema/"])
@pytest.mark.parametrize(
    ("public", "who", "status"),
    [
        (True, "anonymous", 200),
        (False, "anonymous", 401),
        (False, "wrong key", 401),
        (False, "key", 200),
        (False, "staff", 200),
        (False, "not staff", 401),
    ],
)
def test_the_docs_are_public_only_when_configured(settings, url, public, who, status):
    settings.API_DOCS_PUBLIC = public
    client = Client()
    headers = {}
    if who in ("key", "wrong key"):
        headers["X-Internal-Auth"] = KEY if who == "key" else "nope"
    if who in ("staff", "not staff"):
        user = User.objects.create_user("u", password="pw-0123456789", is_staff=who == "staff")
        client.force_login(user)
    response = client.get(url, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json() == {"detail": "unauthorized"}


# --- the docs in the project ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("doc", ["README.md", "docs/protocol.md"])
def test_the_docs_link_only_to_files_in_the_project(doc):
    """A clone has no ../shared/: every relative link must resolve inside the repository, and
    every #anchor to a heading of its file."""
    text = (ROOT / doc).read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        target, _, anchor = link.partition("#")
        path = (ROOT / doc).parent / target if target else ROOT / doc
        assert path.resolve().is_relative_to(ROOT) and path.exists(), f"{doc}: {link}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
            assert anchor in slugs, f"{doc}: {link}"
