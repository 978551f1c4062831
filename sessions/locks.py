"""One turn at a time per session, across daphne processes and machines.

The lease lives on the session row (``turn_owner``, ``turn_expires_at``) and is claimed with a
conditional UPDATE, so it works the same on SQLite and PostgreSQL and holds no transaction open
while the model talks. A running turn renews it on a heartbeat; a crashed process's lease simply
expires. Cancelling a turn from anywhere revokes the lease, and the heartbeat of the turn that
lost it stops that turn. A revoked lease stays on the row as a tombstone (``revoked:<token>``)
until that turn has stopped and released it (or the lease expires, if its process died), so a
turn waiting behind it never runs while the cancelled one is still writing.

Fencing: while a turn runs, its lease is in a context variable (``fenced``), and every write it
makes first checks, under the session row's lock, that the row still names it (``fence_check``;
``message_append`` does it in the lock it takes anyway). A turn whose lease expired and was
taken by another can therefore write nothing more: it gets ``LeaseLost`` and stops.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from agent_runtime.errors import Conflict, NotFound
from sessions import rows
from sessions.db import DatabaseUnavailable, durable
from sessions.models import AgentSession

POLL_SECONDS = 0.01
MAX_POLL_SECONDS = 0.1
T = TypeVar("T")
REVOKED = "revoked:"  # prefix of a cancelled turn's lease until that turn releases it


@dataclass(frozen=True)
class TurnLease:
    session_id: str
    token: str
    # time.monotonic() just before the claim that took it: the row's expiry is at most the
    # TTL after this (the heartbeat counts from here).
    claimed_at: float = 0.0

    def holds(self, owner: str) -> bool:
        """Whether a row whose ``turn_owner`` is ``owner`` is still this lease's (a revoked
        one is: the tombstone keeps every other turn out until this one releases it)."""
        return owner in (self.token, REVOKED + self.token)


class LeaseLost(Conflict):
    code = "lease_lost"

    def __init__(self) -> None:
        super().__init__(
            "This turn lost its hold on the session (the database was unreachable for too "
            "long), so it stopped without saving more; send the message again."
        )


_fence: contextvars.ContextVar[TurnLease | None] = contextvars.ContextVar("fence", default=None)


@contextmanager
def fenced(lease: TurnLease) -> Iterator[None]:
    """Writes made in this context (and the tasks and threads it starts) are the turn's."""
    reset = _fence.set(lease)
    try:
        yield
    finally:
        _fence.reset(reset)


def fence_owner_ok(owner: str) -> None:
    """For a writer that already holds the session row's lock: refuse a fenced-off turn."""
    lease = _fence.get()
    if lease is not None and not lease.holds(owner):
        raise LeaseLost()


def fence_check(session_id: str) -> None:
    """Inside a transaction: lock the session row and refuse if this turn lost its lease.
    A no-op outside a turn."""
    lease = _fence.get()
    if lease is None or lease.session_id != session_id:
        return
    owner = (
        AgentSession.objects.select_for_update()
        .filter(pk=session_id)
        .values_list("turn_owner", flat=True)
        .first()
    )
    fence_owner_ok(owner or "")


def _ttl() -> timedelta:
    return timedelta(seconds=settings.TURN_LOCK_TTL_SECONDS)


# The lease's statements run in every turn (claim, renewals, release): SQL built once
# (sessions.rows), the same conditional UPDATEs the ORM would make.
_CLAIM = (
    'UPDATE "agent_sessions_agentsession" SET "turn_owner" = %s, "turn_expires_at" = %s'
    ' WHERE "id" = %s AND "deleted_at" IS NULL AND ("turn_owner" = \'\''
    ' OR "turn_expires_at" IS NULL OR "turn_expires_at" < %s OR "turn_owner" = %s)'
)
_RENEW = (
    'UPDATE "agent_sessions_agentsession" SET "turn_expires_at" = %s'
    ' WHERE "id" = %s AND "turn_owner" = %s'
)
_RELEASE = (
    'UPDATE "agent_sessions_agentsession" SET "turn_owner" = \'\', "turn_expires_at" = NULL'
    ' WHERE "id" = %s AND "turn_owner" IN (%s, %s)'
)


def _expiry(at: Any) -> Any:
    return rows.db_value(AgentSession, "turn_expires_at", at)


def try_claim(session_id: str, token: str) -> bool:
    """Take a free (or expired) lease of a live session. Our own token counts as free too: a
    claim retried after a database error may already have gone through."""
    now = timezone.now()
    params = [token, _expiry(now + _ttl()), session_id, _expiry(now), token]
    return rows.update(_CLAIM, params) == 1


def renew(lease: TurnLease) -> bool:
    """Extend the lease; False means it was revoked (cancelled) or taken over after expiry."""
    params = [_expiry(timezone.now() + _ttl()), lease.session_id, lease.token]
    return rows.update(_RENEW, params) == 1


def release(lease: TurnLease) -> None:
    """Free the session, also when the lease was revoked (the cancelled turn has now stopped)."""
    rows.update(_RELEASE, [lease.session_id, lease.token, REVOKED + lease.token])


async def release_soon(lease: TurnLease) -> bool:
    """Release, retrying through a database outage until the lease would have expired anyway
    (then the row frees itself). True once released. A caller may stop waiting sooner and
    leave this running: the session is then usable as soon as the database is back."""
    try:
        await durable(
            "release the session's turn",
            release,
            seconds=settings.TURN_LOCK_TTL_SECONDS,
            lease=lease,
        )
    except DatabaseUnavailable:
        return False
    return True


def revoke(session_id: str) -> bool:
    """Take the lease away from whoever holds it; True if a turn was running.

    The holder's renewals fail from now on, so its heartbeat stops it; the session stays busy
    (a tombstone keeps the expiry) until that turn releases it, so a turn queued behind starts
    only once the cancelled one has recorded what it streamed.
    """
    return (
        AgentSession.objects.filter(pk=session_id)
        .exclude(turn_owner="")
        .exclude(turn_owner__startswith=REVOKED)
        .update(turn_owner=Concat(Value(REVOKED), F("turn_owner")))
        == 1
    )


_BUSY = object()


def _claim_then(session_id: str, token: str, then: Callable[[], T]) -> Any:
    """One transaction: claim the lease and, if that worked, run ``then`` under it. All or
    nothing: a refusal half-way (a switch over the cap, say) leaves neither the claim nor any
    write behind."""
    with transaction.atomic():
        if try_claim(session_id, token):
            return then()
    if not AgentSession.objects.live().filter(pk=session_id).exists():
        raise NotFound(f"session {session_id!r} not found")
    return _BUSY


async def acquire(session_id: str, *, wait: bool, then: Callable[[], T]) -> tuple[TurnLease, T]:
    """Claim the session's turn, waiting up to TURN_LOCK_WAIT_SECONDS unless ``wait`` is off.

    ``then`` runs in the same database call once the lease is held (it is released again if
    ``then`` raises), so the common case costs one round trip.
    """
    token = uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.TURN_LOCK_WAIT_SECONDS
    delay = POLL_SECONDS
    while True:
        claimed_at = time.monotonic()
        result = await durable(
            "take the session's turn", _claim_then, session_id=session_id, token=token, then=then
        )
        if result is not _BUSY:
            break
        if not wait or loop.time() >= deadline:
            raise Conflict(
                "this session is busy with another turn; retry when it finishes"
                + ("" if wait else " (or send wait=true to queue behind it)")
                + ".",
                code="session_busy",
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_POLL_SECONDS)
    return TurnLease(session_id=session_id, token=token, claimed_at=claimed_at), result
