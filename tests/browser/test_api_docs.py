"""The docs page in headless Chromium: Swagger UI draws every operation from the runtime's own
schema, every request the page makes goes to the runtime itself (nothing from a CDN), and a
request tried from the page works with the key given to *Authorize*.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.common import WAIT_MS
from tests.e2e.server import API_KEY, Runtime

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture(scope="module")
def runtime(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    database = tmp_path_factory.mktemp("api-docs") / "runtime.sqlite3"
    # DEBUG stays off, as in production; the docs are opened the way an operator would.
    server = Runtime(
        database_url=f"sqlite:///{database}", extra_env={"API_DOCS_PUBLIC": "true"}, name="docs"
    )
    try:
        yield server.start()
    finally:
        server.close()


def test_the_docs_page_draws_the_api_and_tries_a_request(browser, runtime):  # noqa: F811
    context = browser.new_context(base_url=runtime.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    try:
        page = context.new_page()
        page.goto("/api/docs/")
        page.wait_for_selector(".opblock")
        assert page.locator(".info .title").inner_text().startswith("agent-runtime")
        assert page.locator(".opblock").count() == 21  # every operation of the schema
        assert page.locator(".opblock-summary-path", has_text="/agent/message/stream").count()

        page.get_by_role("button", name="Authorize").click()
        page.locator(".modal-ux input").fill(API_KEY)
        page.locator(".modal-ux .auth-btn-wrapper button.authorize").click()
        page.locator(".modal-ux .auth-btn-wrapper button.btn-done").click()

        operation = page.locator("#operations-agents-agents_retrieve")
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        operation.get_by_role("button", name="Execute").click()
        live = operation.locator(".live-responses-table tr.response .response-col_status")
        live.first.wait_for()
        assert live.first.inner_text().strip() == "200"
        assert "orchestrator" in operation.locator(".live-responses-table").inner_text()
    finally:
        context.close()
    assert f"{runtime.url}/agents" in requested  # the try went out, with the key
    foreign = [url for url in requested if not url.startswith(runtime.url + "/")]
    assert foreign == []
