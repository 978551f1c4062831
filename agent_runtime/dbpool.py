"""The PostgreSQL pool's connection check, which sweeps the whole pool once it finds a dead one.

psycopg_pool checks each connection it hands out; one that fails is dropped and the caller tries
the next after a back-off of 1 s, then 2 s, then 4 s. After an outage (a restart, a failover,
a network cut) every idle connection is dead, so with three or more of them the first caller
gave up after its 5 s (DB_POOL_TIMEOUT) although the database was back: a 503 for nothing.
Here the first dead connection starts ``pool.check()`` in the background, which tests every
idle connection at once and replaces the dead ones, so the caller's next try finds a live one.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from psycopg_pool import ConnectionPool

_sweeping = threading.Lock()


def install_check(sender: Any, connection: Any, **kwargs: Any) -> None:
    """On each new connection (``connection_created``): make the pool use this module's check.

    Django builds the pool with psycopg_pool's own check and takes no other, so it is replaced
    on the pool itself once the pool exists.
    """
    pool = getattr(connection, "_connection_pools", {}).get(connection.alias)
    if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
        pool._check = functools.partial(check_connection, pool=pool)


def check_connection(conn: Any, *, pool: ConnectionPool[Any]) -> None:
    """psycopg_pool's check of ``conn``; a dead one starts a sweep of its ``pool``."""
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        if _sweeping.acquire(blocking=False):  # else a sweep is already running
            threading.Thread(target=_sweep, args=(pool,), name="db-pool-sweep", daemon=True).start()
        raise


def _sweep(pool: ConnectionPool[Any]) -> None:
    try:
        pool.check()
    except Exception:  # noqa: S110 - a failed sweep leaves the pool's own checks in charge
        pass
    finally:
        _sweeping.release()
