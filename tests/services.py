"""Where the real PostgreSQL and Redis are, and what to do when they are not there.

On a developer's laptop a missing service skips the tests that need it, with the reason. In CI
(``CI=true``) a missing service is a failure. Also a small CLI for the Makefile:
``python -m tests.services check|postgres-wanted|postgres-url``.
"""

from __future__ import annotations

import functools
import os
import sys

DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def postgres_url() -> str:
    return os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL


def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL") or DEFAULT_REDIS_URL


@functools.cache
def postgres_problem() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(postgres_url(), connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {postgres_url()} is not reachable: {exc}".strip()
    return None


@functools.cache
def redis_problem() -> str | None:
    try:
        import redis

        client = redis.Redis.from_url(redis_url(), socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        return f"Redis at {redis_url()} is not reachable: {exc}"
    return None


def require(problem: str | None) -> None:
    """Skip (laptop) or fail (CI) the calling test when a service is missing."""
    if problem is None:
        return
    import pytest

    if in_ci():
        pytest.fail(f"{problem} (CI=true: real services are required)")
    pytest.skip(problem)


def require_redis() -> str:
    require(redis_problem())
    return redis_url()


def require_postgres() -> str:
    require(postgres_problem())
    return postgres_url()


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    if command == "check":
        problems = [p for p in (postgres_problem(), redis_problem()) if p]
        for problem in problems:
            print(
                ("ERROR: " if in_ci() else "note: ")
                + problem
                + ("" if in_ci() else "; tests that need it will skip.")
            )
        return 1 if problems and in_ci() else 0
    if command == "postgres-wanted":
        if in_ci() or postgres_problem() is None:
            return 0
        print(f"--- PostgreSQL pass skipped: {postgres_problem()} ---")
        return 1
    if command == "postgres-url":
        print(postgres_url())
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
