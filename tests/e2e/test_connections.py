"""A process's PostgreSQL connections stay within its pool, whatever the load.

One daphne on PostgreSQL + Redis, 200 turns at once and 50 ``/events`` followers; a sampler
counts the runtime's connections in ``pg_stat_activity`` the whole time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests import fakellm
from tests.e2e.conftest import (
    AUTH,
    Api,
    check_chunk_json,
    check_turn,
    start_runtime,
    text_of,
    user,
)
from tests.e2e.server import Runtime

pytestmark = pytest.mark.e2e

POOL_SIZE = 20  # the default DB_POOL_MAX_SIZE, set explicitly so the bound is this test's own
TURNS = 200
FOLLOWERS = 50


class ConnectionSampler:
    """Counts the connections to one database every 20 ms, from a thread of its own."""

    def __init__(self, server_url: str, database: str) -> None:
        self.server_url = server_url
        self.database = database
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.database,),
                ).fetchone()
                self.peak = max(self.peak, row[0] if row else 0)
                self.samples += 1
                self._stop.wait(0.02)


@pytest.fixture(scope="module")
def runtime(
    request: pytest.FixtureRequest,
    postgres_db: str,
    redis_env: dict[str, str],
    fake_llm_server: Any,
) -> Runtime:
    return start_runtime(
        request,
        database_url=postgres_db,
        redis_url=redis_env["REDIS_URL"],
        llm_url=fake_llm_server.url,
        extra_env={k: v for k, v in redis_env.items() if k != "REDIS_URL"}
        | {"DB_POOL_MAX_SIZE": str(POOL_SIZE), "TURN_LOCK_WAIT_SECONDS": "30"},
    )


@pytest.fixture
async def wide_http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=TURNS + FOLLOWERS + 20, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=90.0, limits=limits, trust_env=False) as client:
        yield client


async def follow(http: httpx.AsyncClient, url: str, started: asyncio.Event) -> int:
    """Read a session's /events until cancelled; returns the chunks seen."""
    seen = 0
    async with http.stream("GET", url, headers=AUTH) as response:
        assert response.status_code == 200
        started.set()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                check_chunk_json(line[len("data: ") :])
                seen += 1
    return seen


async def test_200_turns_and_50_followers_stay_within_the_pool(
    runtime: Runtime, wide_http: httpx.AsyncClient, fake: Any, postgres_db: str
) -> None:
    api = Api(runtime, wide_http)
    sessions = await asyncio.gather(*(api.new_session(agent="coder") for _ in range(TURNS)))
    reply = " ".join(f"w{i}" for i in range(10))
    fake.enqueue(*(fakellm.text(reply, delay=0.1) for _ in range(TURNS)))
    database = urlsplit(postgres_db).path.lstrip("/")
    server_url = postgres_db.rsplit("/", 1)[0] + "/postgres"
    with ConnectionSampler(server_url, database) as sampler:
        started = [asyncio.Event() for _ in range(FOLLOWERS)]
        followers = [
            asyncio.create_task(
                follow(wide_http, f"{runtime.url}/sessions/{session}/events", event)
            )
            for session, event in zip(sessions, started, strict=False)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
        results = await asyncio.wait_for(
            asyncio.gather(*(api.send(session, user("go")) for session in sessions)), 120
        )
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    for chunks in results:
        check_turn(chunks)
        assert text_of(chunks) == reply
    assert sampler.samples > 10
    print(f"peak {sampler.peak} connections over {sampler.samples} samples")
    assert 0 < sampler.peak <= POOL_SIZE, f"peak {sampler.peak} connections"
