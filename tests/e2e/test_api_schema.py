"""The API against its own schema, on a live daphne (DEBUG off, the demo model), on SQLite and
on PostgreSQL + Redis.

schemathesis reads /api/schema/ from the server and sends what it generates from it (valid and
invalid input, stateful sequences through the links it infers) with every check it has: no 5xx,
every status, header and body as documented (each SSE event's data a Chunk), invalid input
refused, valid input accepted. The docs page is fetched the way a browser would, assets included.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.contrib.staticfiles import finders

from tests.agent_runtime.test_openapi import page_assets
from tests.e2e.conftest import AUTH, start_runtime
from tests.e2e.server import Runtime

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Bounded: about 1,200 requests in 15-30 s on a loaded 2-core machine.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
# Fixed, so a run is reproducible; set another to explore further.
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261203")
# GET /sessions/{id}/events follows a session until the client leaves: it never ends by itself,
# and schemathesis reads a body to its end. Its 404/401 and framing are tested in-process.
NOT_FUZZED = "/sessions/{session_id}/events"


@pytest.fixture(scope="module", params=["sqlite", "postgres+redis"])
def runtime(request: pytest.FixtureRequest, sqlite_url: str) -> Runtime:
    """The embedded defaults, and production's services: PostgreSQL refuses what SQLite stores
    (a NUL in text was a 500 there), so the fuzzing runs on both."""
    if request.param == "sqlite":
        return start_runtime(request, database_url=sqlite_url, name="schema-sqlite")
    redis_env = request.getfixturevalue("redis_env")
    return start_runtime(
        request,
        database_url=request.getfixturevalue("postgres_db"),
        redis_url=redis_env["REDIS_URL"],
        extra_env={k: v for k, v in redis_env.items() if k != "REDIS_URL"},
        name="schema-postgres",
    )


def test_the_docs_page_and_its_assets_are_served_with_debug_off(runtime):
    with httpx.Client(base_url=runtime.url, trust_env=False, timeout=10) as client:
        assert client.get("/api/docs/").status_code == 401  # DEBUG off: not public
        page = client.get("/api/docs/", headers=AUTH)
        assert page.status_code == 200
        assets = page_assets(page.text)
        assert assets
        kinds = set()
        for url in assets:
            asset = client.get(url)  # static files need no key
            assert asset.status_code == 200, url
            # The file drf-spectacular-sidecar ships, byte for byte.
            shipped = finders.find(url.removeprefix("/static/"))
            assert shipped and Path(shipped).read_bytes() == asset.content, url
            kinds.add(asset.headers["Content-Type"].split(";")[0])
        assert kinds == {"text/css", "text/javascript", "image/png"}
        schema = client.get("/api/schema/?format=json", headers=AUTH)
        assert schema.status_code == 200
        assert schema.json()["paths"]["/agent/message/stream"]


def test_schemathesis_finds_nothing_wrong(runtime, tmp_path):
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{runtime.url}/api/schema/?format=json",
            "--header",
            f"X-Internal-Auth: {AUTH['X-Internal-Auth']}",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            SEED,
            "--exclude-path",
            NOT_FUZZED,
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--output-sanitize",
            "false",
        ],
        cwd=tmp_path,  # its reports and caches stay out of the project
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-12000:]
    tested = re.search(r"Tested: (\d+)", output)
    assert tested and int(tested.group(1)) >= 20, output[-3000:]  # every operation but one
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    assert cases and int(cases.group(1)) > 500 and cases.group(1) == cases.group(2), output[-3000:]
    assert runtime.alive()
