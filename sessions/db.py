"""Database calls from the event loop that ride out a short outage.

A blip (a failover, a restart, a dropped connection) surfaces as ``OperationalError`` or
``InterfaceError``. The services a turn calls each run in one transaction, so a failed call
wrote nothing and is safe to run again: ``durable`` retries it with backoff for up to
DB_RETRY_SECONDS, then gives up with ``DatabaseUnavailable``, which the client reads as an
``error`` chunk (status 503). Every retry is logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from channels.db import DatabaseSyncToAsync, database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError

from agent_runtime.errors import ApplicationError

logger = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT = (OperationalError, InterfaceError)
FIRST_DELAY = 0.05
MAX_DELAY = 1.0


@functools.cache
def _pool_threads() -> ThreadPoolExecutor:
    # Half the pool: the other half stays for requests served by Django's own threads (REST,
    # the admin), so turns stuck on a database that is coming back cannot starve them.
    return ThreadPoolExecutor(max(1, settings.DB_POOL_MAX_SIZE // 2), thread_name_prefix="db")


def db_call(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """``database_sync_to_async(fn)``, on threads of their own where the database can use them.

    Channels runs every such call on one thread (thread-sensitive): right for SQLite, which
    takes one writer at a time anyway, but with PostgreSQL it queued a hundred turn starts
    behind one another's round trips. With a connection pool each call takes a pooled
    connection and gives it back, so any thread will do: up to half of DB_POOL_MAX_SIZE at once.
    """
    if settings.USES_POOL:
        return DatabaseSyncToAsync(fn, thread_sensitive=False, executor=_pool_threads())
    return database_sync_to_async(fn)


class DatabaseUnavailable(ApplicationError):
    status = 503
    code = "database_unavailable"

    def __init__(self, what: str) -> None:
        super().__init__(
            f"The database is unreachable, so the runtime could not {what}; try again in a moment."
        )


async def durable(
    what: str, fn: Callable[..., T], /, *, seconds: float | None = None, **kwargs: Any
) -> T:
    """``await db_call(fn)(**kwargs)``, retried through transient errors for
    ``seconds`` (default DB_RETRY_SECONDS).

    ``what`` completes "could not ..." in logs and in the client's error.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + (settings.DB_RETRY_SECONDS if seconds is None else seconds)
    delay = FIRST_DELAY
    call = db_call(fn)
    while True:
        try:
            return await call(**kwargs)
        except TRANSIENT as exc:
            if loop.time() + delay > give_up:
                logger.error("database unavailable: could not %s, giving up: %s", what, exc)
                raise DatabaseUnavailable(what) from exc
            logger.warning(
                "database unavailable: could not %s, retrying in %.2f s: %s",
                what,
                delay,
                str(exc).strip() or type(exc).__name__,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
