"""``manage.py runqcluster``: django-q2's cluster that always stops, and waits for its broker.

Why not ``manage.py qcluster``: django-q2's ``Cluster`` stops from inside its SIGTERM/SIGINT
handler, by setting a multiprocessing ``Event`` and joining its sentinel, with no time limit.
When the whole process group is signalled (Ctrl-C in a shell, ``kill -TERM -<pgid>``, systemd's
control-group kill), the sentinel, which resets SIGTERM to the default, dies at once, often
holding that Event's lock in its guard loop. The handler then blocks on the lock for ever, and
every later signal re-enters a handler that returns, so the process is deaf. And a broker that is
down at start makes the sentinel's ``broker.ping()`` raise: the cluster exits.

What this command does instead: it starts django-q2's ``Sentinel`` itself (as ``Cluster.start``
does) and its signal handler only records the signal. Its main loop pings the broker until it
answers (backoff, a log line per try), starts a sentinel, watches it, and starts another if it
dies unasked (the broker went away). On a signal it sets the stop event from a helper thread it
never waits on for long, gives the sentinel ``--grace`` seconds to finish its tasks, then kills
the sentinel and its processes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from django import db
from django.core.management.base import BaseCommand, CommandParser
from django_q.brokers import get_broker
from django_q.cluster import Sentinel, get_mp_context
from django_q.humanhash import humanize

logger = logging.getLogger("agent_runtime.qcluster")

GRACE_SECONDS = 5.0  # what a task in progress gets before it is killed
POLL_SECONDS = 0.25  # how often the main loop looks at signals and the sentinel
MAX_BACKOFF_SECONDS = 10.0
STEADY_SECONDS = 60.0  # a sentinel that ran this long resets the restart backoff


class Command(BaseCommand):
    help = "Run the django-q2 cluster: waits for its broker, stops cleanly on SIGTERM/SIGINT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--grace",
            type=float,
            default=GRACE_SECONDS,
            help="Seconds the cluster gets to finish its tasks after a stop signal.",
        )

    def handle(self, *args: Any, grace: float, **options: Any) -> None:
        ClusterRunner(grace=grace).run()


class ClusterRunner:
    def __init__(self, *, grace: float) -> None:
        self.grace = grace
        self.signum: int | None = None
        self.cluster_id = uuid.uuid4()
        self.sentinel: BaseProcess | None = None
        self.stop_event: Any = None  # a multiprocessing Event, shared with the sentinel

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        delay = 0.5
        while self.signum is None:
            if not self._wait_for_broker():
                break
            started = time.monotonic()
            self._start_sentinel()
            self._watch()
            if self.signum is not None:
                break
            assert self.sentinel is not None
            delay = 0.5 if time.monotonic() - started > STEADY_SECONDS else delay
            logger.warning(
                "the task cluster stopped by itself (exit code %s); starting it again in %.1f s",
                self.sentinel.exitcode,
                delay,
            )
            self._pause(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        self._stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Record only: the main loop acts within POLL_SECONDS, and nothing here can block.
        self.signum = signum

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.signum is None and time.monotonic() < deadline:
            time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))

    def _wait_for_broker(self) -> bool:
        """Ping until the broker answers (True) or a signal arrives (False).

        Each ping runs in a thread so that a connect to an unreachable host, which can take
        minutes, never delays a stop.
        """
        broker = get_broker()
        delay = 0.5
        while self.signum is None:
            result: list[BaseException | None] = []
            pinger = threading.Thread(
                target=_ping, args=(broker, result), name="broker-ping", daemon=True
            )
            pinger.start()
            while pinger.is_alive() and self.signum is None:
                pinger.join(POLL_SECONDS)
            if self.signum is not None:
                return False
            if result == [None]:
                if delay > 0.5:
                    logger.info("task broker %s is reachable; starting the cluster", broker.info())
                return True
            logger.warning(
                "waiting for the task broker (%s): %s; retrying in %.1f s",
                type(broker).__name__,
                result[0],
                delay,
            )
            self._pause(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        return False

    def _start_sentinel(self) -> None:
        context = get_mp_context()
        self.stop_event = context.Event()
        self.sentinel = context.Process(
            target=Sentinel,
            name=f"Process-{uuid.uuid4().hex}",
            # django-q2's Cluster.start passes the same; broker None: the sentinel makes its own.
            args=(self.stop_event, context.Event(), self.cluster_id, None, None),
        )
        # A forked child must not share our database connection (it closes what it inherits).
        db.connections.close_all()
        self.sentinel.start()
        logger.info("Q Cluster %s starting.", humanize(self.cluster_id.hex))

    def _watch(self) -> None:
        assert self.sentinel is not None
        while self.signum is None and self.sentinel.is_alive():
            self.sentinel.join(POLL_SECONDS)

    def _stop(self) -> None:
        sentinel = self.sentinel
        if sentinel is not None and sentinel.is_alive():
            # Event.set takes a lock that a sentinel killed by the same signal may still hold:
            # set it from a thread we never join, and bound our own wait instead.
            threading.Thread(target=self.stop_event.set, name="stop", daemon=True).start()
            sentinel.join(self.grace)
            if sentinel.is_alive():
                logger.warning(
                    "the task cluster did not stop within %.1f s; killing it", self.grace
                )
                pid = sentinel.pid
                assert pid is not None  # it was started
                for doomed in [*_descendants(pid), pid]:
                    _kill(doomed)
                sentinel.join()
        name = signal.Signals(self.signum).name if self.signum else "no signal"
        if sentinel is None:
            logger.info("stopped (%s) while waiting for the task broker", name)
        else:
            logger.info("Q Cluster %s has stopped (%s).", humanize(self.cluster_id.hex), name)


def _ping(broker: Any, result: list[BaseException | None]) -> None:
    try:
        broker.ping()
    except Exception as exc:
        result.append(exc)
    else:
        result.append(None)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (the sentinel's workers, monitor and pusher)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
