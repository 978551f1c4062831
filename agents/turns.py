"""Running turns: the session lease, the background task, and delivery of chunks.

``submit`` validates a client message and stores it under the session's lease, before anything
is streamed, so every refusal is a clean 4xx. The rest of the turn runs as its own task: a
client that goes away does not stop it, and its result lands in the history. Chunks go to the
caller's queue (the SSE response) and to the session's channel-layer group, so every WebSocket
of the session, in any process, sees them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from agent_runtime.errors import ApplicationError
from agents import services
from agents.chunks import HIGH, USER_REQUESTED, error_chunk, switched_chunk
from agents.engine import Turn
from agents.messages import ClientMessage
from agents.registry import UnknownAgent, get_agent
from approvals.models import Approval
from approvals.services import approval_decide, approvals_expire
from sessions import locks
from sessions.db import TRANSIENT, db_call

if TYPE_CHECKING:
    from channels.layers import BaseChannelLayer

logger = logging.getLogger(__name__)
T = TypeVar("T")
db = db_call

FLUSH_SECONDS = 10.0
# How long the end of a turn waits for its lease to be released before the caller's stream
# ends anyway (the release goes on in the background through a database outage).
RELEASE_WAIT_SECONDS = 5.0
LAYER_LOG_EVERY_SECONDS = 30.0
PRESENCE_SECONDS = 0.5  # how old a "nobody listens to this session" may be (Redis layer)
CENSUS_WINDOW_SECONDS = 0.05  # counts asked within this time share one Redis round trip
_running: dict[str, asyncio.Task[None]] = {}  # this process's turns, by session
_background: set[asyncio.Task[Any]] = set()  # strong references, so tasks are not collected


@dataclass(frozen=True)
class Actor:
    """Who a client message comes from: decisions are recorded in their name."""

    kind: str = Approval.DeciderKind.IDE
    name: str = "ide"
    user: Any = None


IDE = Actor()


def running_turns() -> int:
    """Turns running in this process now (a gauge for /metrics)."""
    return len(_running)


def group_name(session_id: str) -> str:
    # Group names allow only [a-zA-Z0-9_.-]; session ids may hold ':' too.
    return "session-" + hashlib.sha256(session_id.encode()).hexdigest()[:40]


class Delivery:
    """Fans a turn's chunks out to the caller's queue and to the session's group.

    Group sends run in their own task so a slow channel layer never delays the caller's
    stream; text deltas that pile up meanwhile are coalesced into one chunk. Nothing goes to
    the group while nobody listens to it (see ``Audience``).
    """

    def __init__(self, session_id: str, listener: asyncio.Queue[Any] | None) -> None:
        self.group = group_name(session_id)
        self.listener = listener
        # Settings always configure the default layer, so it is never None.
        self.layer = cast("BaseChannelLayer", get_channel_layer())
        self.audience = Audience(self.layer, self.group)
        self.pending: list[dict[str, Any]] = []
        self.wakeup = asyncio.Event()
        self.closed = False
        self.sender = asyncio.create_task(self._send_loop())

    async def emit(self, chunk: dict[str, Any]) -> None:
        if self.listener is not None:
            self.listener.put_nowait(chunk)
        if self.audience.surely_none():
            return
        self.pending.append(chunk)
        self.wakeup.set()

    async def _send_loop(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            batch, self.pending = self.pending, []
            if batch and await self.audience.listening():
                for chunk in coalesce(batch):
                    try:
                        await self.layer.group_send(
                            self.group, {"type": "session.chunk", "chunk": chunk}
                        )
                    except Exception as exc:  # a broken layer must not break the caller's stream
                        _layer_failed(exc)
            if self.closed and not self.pending:
                return

    async def flush(self) -> None:
        """Wait until every chunk has gone to the group (bounded: a stalled channel layer
        must not keep the session locked or the caller's stream open)."""
        self.closed = True
        self.wakeup.set()
        try:
            await asyncio.wait_for(self.sender, FLUSH_SECONDS)
        except TimeoutError:
            logger.error("channel layer stalled; dropped chunks for %s", self.group)

    def finish(self) -> None:
        """Tell the caller's stream that the turn is over."""
        if self.listener is not None:
            self.listener.put_nowait(None)


class Audience:
    """Whether anyone (a socket, an /events follower, in any process) listens to a group.

    With the in-memory layer the layer's own table says so, exactly and for free. With Redis
    the group's live members are counted when the turn's first chunks go out, then at most
    every PRESENCE_SECONDS (``Census`` batches those counts of all the process's turns into one
    round trip): a turn nobody follows costs no ``group_send`` per burst of tokens (a third of
    the server's CPU under load). A listener that joined before the turn started is always
    seen; one that joins while it streams gets its chunks within PRESENCE_SECONDS (and a
    census window), as if it had joined that much later. Other layers: always sent.
    """

    def __init__(self, layer: BaseChannelLayer, group: str) -> None:
        self.group = group
        self.local: dict[str, Any] | None = (
            layer.groups if isinstance(layer, InMemoryChannelLayer) else None
        )
        self.census = Census.of(layer)
        self.heard = True  # until counted
        self.counted_at = -math.inf  # never

    def surely_none(self) -> bool:
        """True when a chunk may be dropped without asking anyone (called per chunk)."""
        if self.local is not None:
            return not self.local.get(self.group)
        return not self.heard and time.monotonic() - self.counted_at < PRESENCE_SECONDS

    async def listening(self) -> bool:
        if self.census is None:
            return self.local is None or bool(self.local.get(self.group))
        first = self.counted_at == -math.inf
        if time.monotonic() - self.counted_at >= PRESENCE_SECONDS:
            self.counted_at = time.monotonic()
            try:
                self.heard = await self.census.count(self.group, at_once=first) > 0
            except Exception:  # cannot tell: send, and let the send report the layer
                self.heard = True
        return self.heard


class Census:
    """Counts the live members of channels_redis groups (a sorted set of channel -> time joined;
    members older than ``group_expiry`` are dead), one pipeline for all the counts asked within
    CENSUS_WINDOW_SECONDS."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Census] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        # By how long a count may wait for others (0: the same turn of the event loop): the
        # counts asked so far, and the task that will send them.
        self.asked: dict[float, dict[str, list[asyncio.Future[int]]]] = {}
        self.flushing: dict[float, asyncio.Task[None]] = {}

    @classmethod
    def of(cls, layer: BaseChannelLayer) -> Census | None:
        if not isinstance(layer, RedisChannelLayer):
            return None
        loop = asyncio.get_running_loop()
        census = cls._by_loop.get(loop)
        if census is None or census.layer is not layer:
            census = cls._by_loop[loop] = cls(layer)
        return census

    def _key(self, group: str) -> tuple[int, Any, int]:
        oldest = int(time.time()) - self.layer.group_expiry
        return self.layer.consistent_hash(group), self.layer._group_key(group), oldest

    async def count(self, group: str, *, at_once: bool = False) -> int:
        """The group's live members. ``at_once`` (a turn's first chunks): counted with the
        other counts asked in the same turn of the event loop, not after the window."""
        window = 0.0 if at_once else CENSUS_WINDOW_SECONDS
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.asked.setdefault(window, {}).setdefault(group, []).append(answer)
        if window not in self.flushing:
            self.flushing[window] = asyncio.create_task(self._flush(window))
        return await answer

    async def _flush(self, window: float) -> None:
        await asyncio.sleep(window)
        asked = self.asked.pop(window)
        del self.flushing[window]
        by_index: dict[int, list[tuple[str, Any, int]]] = {}
        for group in asked:
            index, key, oldest = self._key(group)
            by_index.setdefault(index, []).append((group, key, oldest))
        for index, groups in by_index.items():
            try:
                async with self.layer.connection(index).pipeline(transaction=False) as pipe:
                    for _, key, oldest in groups:
                        pipe.zcount(key, oldest, "+inf")
                    counts = await pipe.execute()
            except Exception as exc:
                for group, _, _ in groups:
                    for answer in asked[group]:
                        if not answer.done():
                            answer.set_exception(exc)
                continue
            for (group, _, _), n in zip(groups, counts, strict=True):
                for answer in asked[group]:
                    if not answer.done():
                        answer.set_result(int(n))


_layer_failure_logged_at = -LAYER_LOG_EVERY_SECONDS


def _layer_failed(exc: Exception) -> None:
    """Log a failing channel layer, once a while: with Redis down every turn's every send
    fails, and one line says all there is to say."""
    global _layer_failure_logged_at
    now = time.monotonic()
    if now - _layer_failure_logged_at >= LAYER_LOG_EVERY_SECONDS:
        _layer_failure_logged_at = now
        logger.warning(
            "channel layer send failed; other sockets and followers miss chunks: %s",
            str(exc) or type(exc).__name__,
        )


def coalesce(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for chunk in batch:
        previous = out[-1] if out else None
        if (
            previous is not None
            and chunk["type"] == previous["type"] == "assistant_message"
            and not previous["is_final"]
            and not chunk["is_final"]
        ):
            text = previous["token"] + chunk["token"]
            out[-1] = {**previous, "token": text, "content": text}
        else:
            out.append(chunk)
    return out


@dataclass(frozen=True)
class Plan:
    """What a claimed turn does next: a step of the agent loop (a method of Turn, with its
    arguments bound), or a single chunk (an explicit switch needs no model)."""

    step: Callable[[Turn], Awaitable[None]] | None = None
    chunk: dict[str, Any] | None = None


def accept(session_id: str, message: ClientMessage, actor: Actor = IDE) -> Plan:
    """Store the client's input under the lease; returns what the turn does next."""
    if message.type == "user_message":
        if message.agent_type:
            try:
                get_agent(message.agent_type)
            except UnknownAgent as exc:
                raise ApplicationError(str(exc)) from None
        services.user_message_accept(session_id=session_id, content=message.content)
        switched = None
        if message.agent_type:
            _, switch = services.agent_switch(
                session=session_id,
                to_agent=message.agent_type,
                reason=USER_REQUESTED,
                confidence=HIGH,
            )
            switched = switch.to_chunk(is_final=False) if switch else None
        # Loaded here, in the same database call, so the model is asked without another trip.
        agent, history = services.turn_llm_input(session_id=session_id)
        return Plan(
            step=functools.partial(
                Turn.user_message,
                content=message.content,
                agent=agent,
                history=history,
                switched=switched,
            )
        )
    if message.type == "tool_result":
        services.tool_result_accept(
            session_id=session_id,
            call_id=message.call_id,
            result=message.result,
            error=message.error,
            decided_by_kind=actor.kind,
            decided_by=actor.name,
            user=actor.user,
        )
        return Plan(step=Turn.advance)
    if message.type == "hitl_decision":
        approval_decide(
            session_id=session_id,
            call_id=message.call_id,
            decision=message.decision,
            decided_by_kind=actor.kind,
            decided_by=actor.name,
            user=actor.user,
            modified_arguments=message.modified_arguments,
            feedback=message.feedback,
            resume=False,  # this turn continues from it
        )
        return Plan(step=functools.partial(Turn.resume, call_id=message.call_id))
    if message.type == "resume":
        return Plan(step=functools.partial(Turn.resume, call_id=message.call_id))
    # switch_agent: no model call; the switch is the whole answer. The user chose the agent,
    # so the switch is as sure as a switch gets.
    context, switch = services.agent_switch(
        session=session_id,
        to_agent=message.agent_type or "",
        reason=message.reason or USER_REQUESTED,
        confidence=HIGH,
    )
    if switch is not None:
        return Plan(chunk=switch.to_chunk(is_final=True))
    already = context.current_agent
    return Plan(
        chunk=switched_chunk(
            from_agent=already,
            to_agent=already,
            reason="already the current agent",
            confidence=HIGH,
            is_final=True,
        )
    )


async def submit(
    session_id: str,
    message: ClientMessage,
    *,
    wait: bool = True,
    listener: asyncio.Queue[Any] | None = None,
    precheck: Callable[[], None] | None = None,
    actor: Actor = IDE,
) -> asyncio.Task[None]:
    """Start a turn; raises ApplicationError (4xx) before anything is streamed.

    ``precheck`` (a rate limit, say) runs once, in the same database call as the first claim.
    """
    checks = [precheck]

    def claimed() -> Plan:
        if checks and (check := checks.pop()) is not None:
            check()
        return accept(session_id, message, actor)

    claiming = asyncio.ensure_future(locks.acquire(session_id, wait=wait, then=claimed))
    try:
        lease, plan = await asyncio.shield(claiming)
    except asyncio.CancelledError:
        # The caller went away while its message was being claimed and stored. The claim
        # finishes regardless; then the turn runs anyway (its result lands in the history),
        # so the lease is never left held by nobody.
        claiming.add_done_callback(_start_detached)
        raise
    return _start(lease, plan, listener)


def _start(
    lease: locks.TurnLease, plan: Plan, listener: asyncio.Queue[Any] | None
) -> asyncio.Task[None]:
    task = asyncio.create_task(_run(lease, plan, listener))
    _running[lease.session_id] = task
    task.add_done_callback(lambda done: _if_never_started(done, lease, listener))
    return task


def _start_detached(claiming: asyncio.Future[Any]) -> None:
    if claiming.cancelled() or claiming.exception() is not None:
        return  # nothing was claimed (or it was released again): nothing to run
    lease, plan = claiming.result()
    _start(lease, plan, None)


_started: set[asyncio.Task[Any]] = set()


def _if_never_started(
    task: asyncio.Task[None], lease: locks.TurnLease, listener: asyncio.Queue[Any] | None
) -> None:
    """A task cancelled before its first step never runs its own clean-up: do it here."""
    if task in _started:
        _started.discard(task)
        return
    if _running.get(lease.session_id) is task:
        del _running[lease.session_id]
    _spawn(_finish(lease, None, listener, why="The turn was cancelled."))


async def _run(lease: locks.TurnLease, plan: Plan, listener: asyncio.Queue[Any] | None) -> None:
    this = asyncio.current_task()
    assert this is not None
    _started.add(this)
    turn: Turn | None = None

    def stop(why: str | None) -> None:
        if turn is not None:
            turn.stopped_because = why
        this.cancel()

    heartbeat = asyncio.create_task(_heartbeat(lease, stop))
    delivery: Delivery | None = None
    try:
        with locks.fenced(lease):
            delivery = Delivery(lease.session_id, listener)
            if plan.chunk is not None:
                await delivery.emit(plan.chunk)
            if plan.step is not None:
                turn = Turn(session_id=lease.session_id, emit=delivery.emit)
                await turn.guarded(plan.step(turn))
    except Exception:  # building the turn failed (a misconfigured provider, say)
        logger.exception("turn of %s could not run", lease.session_id)
        if delivery is not None:
            await delivery.emit(error_chunk("The runtime could not run this turn."))
    finally:
        heartbeat.cancel()
        # From here on a late cancel() must reach nothing: the clean-up runs shielded, or the
        # caller's stream would never end and the session would stay locked.
        if _running.get(lease.session_id) is this:
            del _running[lease.session_id]
        await asyncio.shield(_finish(lease, delivery, listener))


async def _finish(
    lease: locks.TurnLease,
    delivery: Delivery | None,
    listener: asyncio.Queue[Any] | None,
    why: str = "The runtime could not run this turn.",
) -> None:
    try:
        if delivery is not None:
            await delivery.flush()
        # Free the session before the caller's stream ends, so a client that answers at once
        # (a tool_result right after its tool_call) never finds the session still busy. If the
        # database is down, the release goes on retrying after the stream has ended.
        await asyncio.wait({_spawn(locks.release_soon(lease))}, timeout=RELEASE_WAIT_SECONDS)
    finally:
        if delivery is not None:
            delivery.finish()
        elif listener is not None:  # the turn never got as far as its delivery
            listener.put_nowait(error_chunk(why))
            listener.put_nowait(None)


LEASE_LOST = (
    "This turn stopped: the database was unreachable for too long to keep its hold on the "
    "session, and another turn may now run. What it wrote so far is kept; send the message "
    "again to continue."
)


async def _heartbeat(lease: locks.TurnLease, stop: Callable[[str | None], None]) -> None:
    """Renew the lease while the turn runs; stop the turn once it is revoked, or before it
    could expire unrenewed (a database outage): another process may claim an expired lease,
    and two turns must never run in one session."""
    ttl = settings.TURN_LOCK_TTL_SECONDS
    interval = min(2.0, ttl / 3)
    loop = asyncio.get_running_loop()  # its clock is time.monotonic()
    # The claim set the row's expiry to at most this; each renewal moves it on.
    valid_until = lease.claimed_at + ttl
    # Stop this long before the expiry: time for the turn to notice and stop writing.
    margin = max(interval, ttl / 5)
    delay = interval
    while True:
        await asyncio.sleep(max(0.0, min(delay, valid_until - margin - loop.time())))
        if loop.time() >= valid_until - margin:
            logger.error(
                "turn of %s could not renew its lease in time; stopping it", lease.session_id
            )
            stop(LEASE_LOST)
            return
        asked = loop.time()
        try:
            async with asyncio.timeout(max(0.1, valid_until - margin - asked)):
                held = await db(locks.renew)(lease)
        except (*TRANSIENT, TimeoutError) as exc:
            logger.warning(
                "turn of %s could not renew its lease (retrying): %s",
                lease.session_id,
                str(exc).strip() or type(exc).__name__,
            )
            delay = min(interval, 0.25)
            continue
        if not held:
            logger.info("turn of %s lost its lease (cancelled); stopping it", lease.session_id)
            stop(None)
            return
        valid_until = asked + ttl
        delay = interval


async def cancel(session_id: str) -> bool:
    """Stop the session's running turn, here or in any other process (via its lease)."""
    revoked = await db(locks.revoke)(session_id)
    task = _running.get(session_id)
    if task is not None:
        task.cancel()
    return revoked or task is not None


async def _resume(session_id: str, call_id: str) -> None:
    task = await submit(session_id, ClientMessage(type="resume", call_id=call_id), wait=True)
    await task


_server_loop: asyncio.AbstractEventLoop | None = None


def serve_on(loop: asyncio.AbstractEventLoop) -> None:
    """Remember the server's event loop (called from it by agent_runtime.asgi), so that a
    decision committed in a sync view's thread can start its turn there.

    With the in-memory channel layer (no REDIS_URL) the server also expires approvals
    itself: the task cluster is another process, and what its turns send would reach no
    socket of this one.
    """
    global _server_loop
    if _server_loop is loop:
        return
    _server_loop = loop
    if isinstance(get_channel_layer(), InMemoryChannelLayer):
        _spawn(_expire_here())


async def _expire_here() -> None:
    while True:
        await asyncio.sleep(settings.APPROVAL_EXPIRY_INTERVAL_SECONDS)
        try:
            expired = await db(approvals_expire)()
        except Exception:
            logger.exception("expiring approvals failed; trying again next time")
            continue
        for approval in expired:  # each session continues on its own
            _spawn(_resume(approval.session_id, approval.call_id))


def resume_session(*, session_id: str, call_id: str) -> None:
    """Continue the session after a decision made outside a turn.

    In the server the turn starts on its event loop and this returns at once; elsewhere (a
    task worker, a command, a test) it runs to the end here.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # called from async code: the loop is right here
        _spawn(_resume(session_id, call_id))
        return
    loop = _server_loop
    if loop is not None and loop.is_running():
        # A fresh context: the caller's may hold asgiref's per-request executor, which is
        # gone by the time the turn needs the database.
        loop.call_soon_threadsafe(
            _spawn, _resume(session_id, call_id), context=contextvars.Context()
        )
    else:
        async_to_sync(_resume)(session_id, call_id)


def on_approval_decided(sender: Any, *, approval: Approval, **kwargs: Any) -> None:
    """Receiver of approvals.signals.approval_decided (connected in AgentsConfig.ready)."""
    resume_session(session_id=approval.session_id, call_id=approval.call_id)


def _spawn(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task kept alive until it ends (the loop holds only weak references), its failure
    logged."""
    task = asyncio.get_running_loop().create_task(work)
    _background.add(task)
    task.add_done_callback(_background.discard)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background turn failed", exc_info=task.exception())
