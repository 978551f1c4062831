"""Fixtures of the browser tests: Chromium, the fake LLM and one daphne per test module.

The browser comes first, so a missing Chromium skips before daphne starts.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.common import AUTH, CHROMIUM, CHROMIUM_ARGS, CREATE_STAFF, LAPTOP, WAIT_MS
from tests.e2e.server import ROOT, Runtime
from tests.fakellm import FakeLLM
from tests.services import require


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        require(
            f"Chromium is not installed at {CHROMIUM} "
            "(run tests/browser/setup.sh as root, or apt-get install chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        require(f"the playwright package is not installed: {exc}")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
    except Exception as exc:
        playwright.stop()
        require(f"Playwright cannot launch {CHROMIUM}: {str(exc).splitlines()[0]}")
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runtime(
    browser: Any, fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    database = tmp_path_factory.mktemp("browser") / "runtime.sqlite3"
    server = Runtime(database_url=f"sqlite:///{database}", llm_url=fake.url, name="browser")
    try:
        server.start()
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", CREATE_STAFF],
            cwd=ROOT,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"creating the staff user failed:\n{done.stderr[-3000:]}"
        yield server
    finally:
        server.close()


def _page(browser: Any, runtime: Runtime, viewport: dict[str, int]) -> Iterator[Any]:
    context = browser.new_context(base_url=runtime.url, viewport=viewport)
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser: Any, runtime: Runtime) -> Iterator[Any]:
    yield from _page(browser, runtime, {"width": 1280, "height": 900})


@pytest.fixture
def laptop(browser: Any, runtime: Runtime) -> Iterator[Any]:
    """A page the size of a common staff laptop screen, where the console must work unscrolled."""
    yield from _page(browser, runtime, LAPTOP)


@pytest.fixture
def rest(runtime: Runtime) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=runtime.url, headers=AUTH, timeout=15.0, trust_env=False) as c:
        yield c


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # pytest's temp root (kept for the last few runs), never the work tree.
    return tmp_path_factory.mktemp("screenshots")
