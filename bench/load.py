"""Load benchmark: N turns at once against the runtime in its production configuration.

    .venv/bin/python bench/load.py [--turns N] [--tokens N] [--delay S] [--workers W]
                                   [--sqlite] [--deadline S] [--keep-logs]

One run creates a fresh PostgreSQL database (``bench_<hex>`` on 127.0.0.1:5432, dropped WITH
(FORCE) at the end) and a Redis key prefix of its own (db 14 on 127.0.0.1:6379, its keys deleted
at the end), migrates, starts tests/fakellm.py (every reply: ``--tokens`` tokens, ``--delay``
apart) and W daphne processes with DEBUG off and non-default keys, each on its own port. It
creates N sessions (switched to the coder agent, so no routing call is made), opens N
connections, spread round-robin over the processes, then sends every turn at once and reads the
SSE replies with a client built on raw asyncio streams (httpx would cost about as much CPU per
chunk as the server does).

Printed: turns completed / N, TTFT p50/p99 (request sent -> first ``assistant_message`` frame),
the daphne processes' CPU per relayed token, peak PostgreSQL connections to the benchmark's
database, peak RSS of the daphne processes, and the CPU of the fake LLM and of this client for
scale. ``--sqlite`` runs the same on the embedded defaults (SQLite, in-memory channel layer,
local-memory cache) for comparison.

Exit status: 0 when every turn completed, 1 when some did not (the first reasons are printed),
2 when the benchmark could not run, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from psycopg import sql

if __package__ in (None, ""):  # run as a script: make the ``bench`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import BenchError, Runtime, cpu_seconds, on_signal, pct, print_table, rss_kb

# Only ever 127.0.0.1.
POSTGRES_SERVER = "postgres://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/14"
API_KEY = "bench-load-internal-api-key-0123456789abcdef"
SECRET_KEY = "bench-load-secret-key-not-the-default-0123456789abcdef"  # noqa: S105
PROMPT = "Write a function."
SETUP_TIMEOUT = 30.0  # one set-up request
SETUP_CONCURRENCY = 8
SAMPLE_INTERVAL = 0.1
SETTLE = 0.3  # after the last turn: include what the server does after its final chunk
SHOW_FAILURES = 5

Log = Callable[[str], None]  # prints a time-stamped progress line on stderr

# Variables a developer's shell may hold that would change what the runtime talks to.
_SCRUB = (
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "REDIS_URL",
    "LLM_BASE_URL",
    "LLM_API_KEY",
    "CHANNEL_PREFIX",
    "CACHE_PREFIX",
    "ALLOWED_HOSTS",
    "MULTI_AGENT_MODE",
    "APPROVAL_REQUIRED_TOOLS",
    "TOOL_POLICY",
)


# --- Database, Redis and the runtime's environment ------------------------------------------


@dataclass
class Backend:
    database_url: str
    pg_database: str | None = None  # the PostgreSQL database to sample; None on SQLite
    redis_prefix: str | None = None

    @property
    def label(self) -> str:
        if self.pg_database is None:
            return "SQLite + in-memory layer and cache (embedded defaults)"
        return f"PostgreSQL {self.pg_database} + Redis db 14, prefix {self.redis_prefix}"


def _drop_database(name: str) -> None:
    with psycopg.connect(POSTGRES_SERVER, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _delete_redis_keys(prefix: str) -> int:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()


@contextlib.contextmanager
def backend(use_sqlite: bool, tmp: Path, log: Log) -> Iterator[Backend]:
    """A fresh database (and Redis prefix) for this run, removed afterwards, even on Ctrl-C."""
    if use_sqlite:
        yield Backend(f"sqlite:///{tmp / 'load.sqlite3'}")
        return
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {REDIS_URL} is not reachable: {exc}") from exc
    name = f"bench_{uuid.uuid4().hex[:12]}"
    prefix = f"bench-load-{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(POSTGRES_SERVER, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchError(f"cannot create a database on {POSTGRES_SERVER}: {exc}") from exc
    try:
        yield Backend(f"postgres://postgres@127.0.0.1:5432/{name}", name, prefix)
    finally:
        common.stop_all()  # the runtime first, so nothing is left using the database
        try:
            _drop_database(name)
            log(f"dropped database {name}")
        except psycopg.Error as exc:
            print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)
        try:
            n = _delete_redis_keys(prefix)
            log(f"deleted {n} Redis keys under {prefix}")
        except redis.RedisError as exc:
            print(f"warning: could not delete Redis keys {prefix}*: {exc}", file=sys.stderr)


def runtime_env(b: Backend, llm_url: str) -> dict[str, str]:
    """The production configuration: DEBUG off, non-default secrets, PostgreSQL and Redis."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(
        DJANGO_SETTINGS_MODULE="agent_runtime.settings",
        DEBUG="false",
        DJANGO_SECRET_KEY=SECRET_KEY,
        INTERNAL_API_KEY=API_KEY,
        DATABASE_URL=b.database_url,
        LLM_BASE_URL=llm_url,
        RATELIMIT_ENABLE="false",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if b.redis_prefix is not None:
        env.update(REDIS_URL=REDIS_URL, CHANNEL_PREFIX=b.redis_prefix, CACHE_PREFIX=b.redis_prefix)
    return env


def start_servers(env: dict[str, str], workers: int, tmp: Path) -> tuple[list[Runtime], list[int]]:
    """The runtime as production starts it: ``make serve WORKERS=W`` on one port of 127.0.0.1
    (supervisord holding W daphne processes that share the socket, and the task cluster).

    Returns the runtime (one address) and the pids of its daphne processes, whose CPU and
    memory are measured.
    """
    port = common.free_port()
    log = tmp / "serve.log"
    cmd = ["make", "--no-print-directory", "serve", f"WORKERS={workers}", f"PORT={port}"]
    proc = common.spawn(cmd, env={**env, "HOST": "127.0.0.1"}, log=log)
    runtime = Runtime(proc, f"http://127.0.0.1:{port}", log)
    common.wait_healthy(runtime)
    deadline = time.monotonic() + 30
    while len(pids := daphne_pids(proc.pid)) < workers:
        if time.monotonic() > deadline:
            raise BenchError(f"found {len(pids)} of {workers} daphne workers\n{common.tail(log)}")
        time.sleep(0.1)
    return [runtime], pids


def daphne_pids(root: int) -> list[int]:
    """The daphne processes among ``root``'s descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as f:
                    # The command name may hold spaces and parentheses: split after the last ')'.
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    family = {root}
    for _ in range(5):  # make -> supervisord -> daphne, a few levels at most
        family |= {pid for pid, parent in parents.items() if parent in family}
    for pid in sorted(family - {root}):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"/daphne\0" in f.read():  # python .venv/bin/daphne --fd 0 ...
                    found.append(pid)
    return found


# --- A cheap HTTP/1.1 client on raw asyncio streams --------------------------------------------


def http_request(port: int, method: str, path: str, body: Mapping[str, object]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"X-Internal-Auth: {API_KEY}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + data


async def read_status(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head


async def read_rest(reader: asyncio.StreamReader, limit: int = 4096) -> str:
    """What is left of a (short, error) response, on one line, for a failure's reason."""
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(5):
            data = await reader.read(limit)
            # DEBUG off: a 500 is a small HTML page; keep its words only.
            return " ".join(re.sub(r"<[^>]*>", " ", data.decode(errors="replace")).split())
    return ""


async def call(port: int, method: str, path: str, body: Mapping[str, object]) -> tuple[int, str]:
    """A whole request and response (set-up only)."""
    async with asyncio.timeout(SETUP_TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(http_request(port, method, path, body))
            status, _ = await read_status(reader)
            return status, await read_rest(reader)
        finally:
            writer.close()


async def create_sessions(servers: list[Runtime], n: int) -> list[str]:
    """N sessions, each switched to the coder agent (as tests/e2e does), round-robin."""
    run = uuid.uuid4().hex[:8]
    ids = [f"load-{run}-{i}" for i in range(n)]
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(i: int, sid: str) -> None:
        port = servers[i % len(servers)].port
        async with gate:
            status, text = await call(port, "POST", "/sessions", {"session_id": sid})
            if status != 201:
                raise BenchError(f"POST /sessions answered {status}: {text[:300]}")
            body = {"target_agent": "coder", "reason": "bench"}
            status, text = await call(port, "POST", f"/agents/{sid}/switch", body)
            if status != 200:
                raise BenchError(f"POST /agents/{sid}/switch answered {status}: {text[:300]}")

    await asyncio.gather(*(one(i, sid) for i, sid in enumerate(ids)))
    return ids


# --- One turn --------------------------------------------------------------------------------

_ASSISTANT = b'data: {"type":"assistant_message"'
_ERROR = b'data: {"type":"error"'
_FINAL = b'"is_final":true'


@dataclass(slots=True)
class Turn:
    session_id: str
    port: int
    sent: float = 0.0
    ttft: float | None = None  # seconds from the request sent to the first assistant frame
    frames: int = 0  # ``data: `` frames
    tokens: int = 0  # tokens in the assistant frames (the final one carries the last)
    final: bool = False  # the last frame so far was is_final
    done: bool = False  # the response body ended
    error: str | None = None

    def verdict(self, want_tokens: int) -> str | None:
        """None when the turn completed, else why not."""
        if self.error is not None:
            return self.error
        if not self.done:
            return f"unfinished after {self.frames} frames"
        if not self.final:
            return f"the stream ended without a final chunk after {self.frames} frames"
        if self.tokens != want_tokens:
            return f"{self.tokens} of {want_tokens} tokens"
        if not self.tokens + 1 <= self.frames <= self.tokens + 3:
            return f"{self.frames} frames for {self.tokens} tokens"
        return None


def _on_frame(turn: Turn, frame: bytes, now: float) -> None:
    if not frame.startswith(b"data: "):
        return  # a keepalive comment
    turn.frames += 1
    turn.final = _FINAL in frame
    if frame.startswith(_ASSISTANT):
        if turn.ttft is None:
            turn.ttft = now - turn.sent
        # The fake's tokens are "tok0 ", "tok1 ", ...: each appears twice (content, token);
        # the key "token" holds one more "tok". Exact even if the runtime merges deltas.
        turn.tokens += (frame.count(b"tok") - 1) // 2
    elif frame.startswith(_ERROR) and turn.error is None:
        try:
            chunk = json.loads(frame[6:])
            why = chunk.get("error") or chunk.get("content")
        except ValueError:
            why = frame[6:200].decode(errors="replace")
        turn.error = f"error chunk: {why}"


async def read_turn(turn: Turn, reader: asyncio.StreamReader) -> None:
    """Read one SSE reply (chunked transfer encoding), counting frames as they come."""
    status, head = await read_status(reader)
    if status != 200:
        turn.error = f"HTTP {status}: {(await read_rest(reader))[:200]}"
        turn.done = True
        return
    chunked = b"transfer-encoding: chunked" in head.lower()
    raw = b""  # bytes not yet de-chunked
    sse = b""  # de-chunked bytes not yet split into frames
    while True:
        data = await reader.read(65536)
        now = time.perf_counter()
        if not data:
            break
        ended = False
        if chunked:
            raw += data
            pos = 0
            while (eol := raw.find(b"\r\n", pos)) >= 0:
                size = int(raw[pos:eol].split(b";", 1)[0], 16)
                if size == 0:
                    ended = True
                    break
                end = eol + 2 + size
                if len(raw) < end + 2:
                    break  # wait for the rest of this chunk
                sse += raw[eol + 2 : end]
                pos = end + 2
            raw = raw[pos:]
        else:
            sse += data
        if b"\n\n" in sse:
            *frames, sse = sse.split(b"\n\n")
            for frame in frames:
                _on_frame(turn, frame, now)
        if ended:
            break
    turn.done = True


async def run_turns(
    servers: list[Runtime], sessions: list[str], deadline: float, log: Log
) -> tuple[list[Turn], float]:
    """Open a connection per turn, send every request at once, read all replies.

    Returns the turns and the wall time from the first request sent to the last reply read.
    Turns still running at ``deadline`` (time.monotonic()) are stopped and count as failed.
    """
    turns = [Turn(sid, servers[i % len(servers)].port) for i, sid in enumerate(sessions)]

    async def connect(turn: Turn) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                return await asyncio.open_connection("127.0.0.1", turn.port)
        except (OSError, TimeoutError) as exc:
            turn.error = f"connect: {type(exc).__name__}: {exc}"
            return None

    conns = await asyncio.gather(*(connect(t) for t in turns))
    log(f"{sum(c is not None for c in conns)} connections open; sending {len(turns)} turns")

    async def read(turn: Turn, reader: asyncio.StreamReader) -> None:
        try:
            await read_turn(turn, reader)
        except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            turn.error = turn.error or f"{type(exc).__name__}: {exc}"

    tasks: dict[asyncio.Task[None], Turn] = {}
    writers = []
    start = time.perf_counter()
    for turn, conn in zip(turns, conns, strict=True):
        if conn is None:
            continue
        reader, writer = conn
        body = {
            "session_id": turn.session_id,
            "message": {"type": "user_message", "content": PROMPT},
        }
        writer.write(http_request(turn.port, "POST", "/agent/message/stream", body))
        turn.sent = time.perf_counter()
        tasks[asyncio.create_task(read(turn, reader))] = turn
        writers.append(writer)
    try:
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            for task in pending:
                task.cancel()
                turn = tasks[task]
                turn.error = f"still running at the deadline ({turn.frames} frames so far)"
            await asyncio.gather(*pending, return_exceptions=True)
        wall = time.perf_counter() - start
    finally:
        for writer in writers:
            writer.close()
    return turns, wall


# --- Sampling RSS and PostgreSQL connections -------------------------------------------------


class Sampler(threading.Thread):
    """Every ~100 ms: VmRSS of the daphne processes, connections to the benchmark's database."""

    def __init__(self, pids: list[int], pg_database: str | None) -> None:
        super().__init__(name="sampler", daemon=True)
        self.pids = pids
        self.pg_database = pg_database
        self.stopping = threading.Event()
        self.samples = 0
        self.rss_sum_kb = 0  # peak of the sum over the processes
        self.rss_max_kb = 0  # peak of any one process
        self.pg_peak = 0  # connections to the benchmark's database (the sampler's not counted)
        self.pg_server_peak = 0  # client connections to the whole server, the sampler's included
        self.pg_max_connections = 0
        self.pg_error: str | None = None
        self._conn: psycopg.Connection[tuple[int, int]] | None = None

    def open(self) -> None:
        if self.pg_database is None:
            return
        # On the server's maintenance database, so the sampler is not one of the counted.
        self._conn = psycopg.connect(POSTGRES_SERVER, autocommit=True, connect_timeout=5)
        row = self._conn.execute("SHOW max_connections").fetchone()
        self.pg_max_connections = int(row[0]) if row else 0

    def sample(self) -> None:
        rss = [rss_kb(pid) for pid in self.pids]
        self.rss_sum_kb = max(self.rss_sum_kb, sum(rss))
        self.rss_max_kb = max(self.rss_max_kb, *rss)
        if self._conn is not None and self.pg_error is None:
            try:
                row = self._conn.execute(
                    "SELECT count(*) FILTER (WHERE datname = %s),"
                    " count(*) FILTER (WHERE backend_type = 'client backend')"
                    " FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
                    (self.pg_database,),
                ).fetchone()
                if row:
                    self.pg_peak = max(self.pg_peak, row[0])
                    self.pg_server_peak = max(self.pg_server_peak, row[1] + 1)
            except psycopg.Error as exc:
                self.pg_error = f"{type(exc).__name__}: {exc}"
        self.samples += 1

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_INTERVAL):
            self.sample()

    def finish(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(5)
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()


# --- Main ------------------------------------------------------------------------------------


@dataclass
class Figures:
    turns: list[Turn]
    want_tokens: int
    wall: float
    server_cpu: float
    fake_cpu: float
    client_cpu: float
    workers: int
    sampler: Sampler
    pg_before: int
    logs: list[Path]


def report(f: Figures) -> int:
    n = len(f.turns)
    verdicts = [(t, t.verdict(f.want_tokens)) for t in f.turns]
    done = [t for t, why in verdicts if why is None]
    failed = [(t, why) for t, why in verdicts if why is not None]
    tokens = sum(t.tokens for t in f.turns)
    ttfts = [t.ttft * 1000 for t in done if t.ttft is not None]
    s = f.sampler

    def per_token(cpu: float) -> str:
        return f"{cpu * 1e6 / tokens:.0f} us/token" if tokens else "-"

    rows: list[tuple[str, ...]] = [
        ("turns completed", f"{len(done)}/{n}", f"{len(failed)} failed" if failed else ""),
        (
            "TTFT p50 / p99 (completed turns)",
            f"{pct(ttfts, 50):.0f} / {pct(ttfts, 99):.0f} ms" if ttfts else "-",
            "request sent -> first assistant frame",
        ),
        ("load window", f"{f.wall:.2f} s", "first request sent -> last reply read"),
        ("relayed tokens", f"{tokens}", "assistant tokens received, all turns"),
        (
            f"server CPU (daphne x{f.workers})",
            f"{f.server_cpu:.2f} s",
            per_token(f.server_cpu),
        ),
        ("fake LLM CPU", f"{f.fake_cpu:.2f} s", per_token(f.fake_cpu)),
        (
            "load client CPU",
            f"{f.client_cpu:.2f} s",
            per_token(f.client_cpu) + " (this process: client + sampler)",
        ),
    ]
    if s.pg_database is not None:
        server = f"server-wide peak {s.pg_server_peak} of max_connections {s.pg_max_connections}"
        rows.append(
            (
                "peak PostgreSQL connections",
                f"{s.pg_peak}" if s.pg_error is None else "?",
                f"{f.pg_before} before the load; {server}"
                if s.pg_error is None
                else f"sampling failed: {s.pg_error}",
            )
        )
    else:
        rows.append(("peak PostgreSQL connections", "-", "SQLite"))
    rows.append(
        (
            "peak RSS (daphne)",
            f"{s.rss_sum_kb / 1024:.0f} MB",
            f"sum; max per process {s.rss_max_kb / 1024:.0f} MB ({s.samples} samples)",
        )
    )
    print()
    print_table(rows, header=False, align="lrl")
    if failed:
        print(f"\nfailures (first {min(SHOW_FAILURES, len(failed))} of {len(failed)}):")
        for turn, why in failed[:SHOW_FAILURES]:
            print(f"  {turn.session_id} (port {turn.port}): {why}")
        # Counts differ from turn to turn; the reasons are grouped without them.
        reasons = collections.Counter(
            re.sub(r"\b\d+( of| frames| tokens)", r"N\1", str(why))[:120] for _, why in failed
        )
        print("by reason:")
        for why, count in reasons.most_common(5):
            print(f"  {count:5d} x {why}")
        if errors := server_errors(f.logs):
            print("exceptions in the daphne logs:")
            for line, count in errors.most_common(5):
                print(f"  {count:5d} x {line}")
    return 0 if len(done) == n else 1


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): .*")


def server_errors(logs: list[Path]) -> collections.Counter[str]:
    """The last line of each traceback in the server logs (a 500's cause), counted."""
    counts: collections.Counter[str] = collections.Counter()
    for path in logs:
        with contextlib.suppress(OSError), path.open(errors="replace") as f:
            for line in f:
                if _EXCEPTION_LINE.match(line):
                    counts[line.strip()[:200]] += 1
    return counts


@dataclass
class Reference:
    """The same load (same sessions, same fake LLM) on another server, in the same run."""

    label: str
    cpu_per_token: float  # seconds
    ttfts: list[float]  # ms, completed turns
    completed: int
    n: int

    def row(self, runtime_cost: float) -> tuple[str, ...]:
        ttft = self.ttfts
        return (
            self.label,
            f"{self.cpu_per_token * 1e6:.0f} us/token",
            f"x{runtime_cost / self.cpu_per_token:.2f}" if self.cpu_per_token else "-",
            f"{pct(ttft, 50):.0f} / {pct(ttft, 99):.0f} ms" if ttft else "-",
            f"{self.completed}/{self.n}",
        )


def measure_reference(
    label: str, server: Runtime, sessions: list[str], args: argparse.Namespace, log: Log
) -> Reference:
    """Put the load on one more server process and read its CPU per token and TTFT."""
    try:
        common.wait_healthy(server)
        log(f"{label}: {len(sessions)} turns")
        cpu0 = cpu_seconds(server.pid)
        turns, _ = asyncio.run(run_turns([server], sessions, time.monotonic() + args.deadline, log))
        time.sleep(SETTLE)
        cpu1 = cpu_seconds(server.pid)
    finally:
        common.stop(server.proc)
    done = [t for t in turns if t.verdict(args.tokens) is None]
    return Reference(
        label=label,
        cpu_per_token=(cpu1 - cpu0) / max(1, sum(t.tokens for t in turns)),
        ttfts=[t.ttft * 1000 for t in done if t.ttft is not None],
        completed=len(done),
        n=len(turns),
    )


def measure_references(
    runtime_env_: dict[str, str],
    fake_url: str,
    sessions: list[str],
    args: argparse.Namespace,
    tmp: Path,
    log: Log,
) -> list[Reference]:
    """``--floor``: a bare relay (``bench.stream:floor_app``: no Django, no database) under
    daphne, the floor the runtime's cost is read against. ``--uvicorn``: the bare relay and the
    runtime itself, one process each, under uvicorn (httptools, uvloop), reported beside daphne.
    """
    floor_env = {**os.environ, "LLM_BASE_URL": fake_url, "PYTHONPATH": str(common.ROOT)}
    apps = {"relay": "bench.stream:floor_app", "bare": "bench.stream:bare_app"}
    refs = []
    if args.floor:
        for name, app in apps.items():
            server = common.spawn_daphne(floor_env, tmp / f"{name}.log", app=app)
            refs.append(measure_reference(f"{name}, daphne", server, sessions, args, log))
    if args.uvicorn:
        for name, app in apps.items():
            server = common.spawn_uvicorn(floor_env, tmp / f"{name}-uvicorn.log", app=app)
            refs.append(measure_reference(f"{name}, uvicorn", server, sessions, args, log))
        server = common.spawn_uvicorn(runtime_env_, tmp / "uvicorn.log")
        refs.append(measure_reference("runtime, uvicorn (1 process)", server, sessions, args, log))
    return refs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="N turns at once against the runtime on PostgreSQL + Redis (or --sqlite)."
    )
    parser.add_argument("--turns", type=int, default=200, help="concurrent turns (200)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply (200)")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between tokens (0.01)")
    parser.add_argument("--workers", type=int, default=1, help="daphne processes (1)")
    parser.add_argument(
        "--sqlite", action="store_true", help="embedded defaults instead of PostgreSQL + Redis"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="seconds for the load (120); turns still running then count as failed",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the daphne/fake logs")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also put the same load on a bare relay under daphne (bench.stream:floor_app) "
        "and print the runtime's CPU per token against it",
    )
    parser.add_argument(
        "--uvicorn",
        action="store_true",
        help="also put the same load on the bare relay and on the runtime under uvicorn "
        "(reported beside daphne, which serves the runtime)",
    )
    args = parser.parse_args(argv)
    if args.turns < 1 or args.tokens < 1 or args.workers < 1 or args.delay < 0:
        parser.error("--turns, --tokens and --workers must be at least 1, --delay at least 0")

    signal.signal(signal.SIGTERM, on_signal)
    atexit.register(common.stop_all)
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    began = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - began:5.1f}s] {msg}", file=sys.stderr, flush=True)

    keep = args.keep_logs
    sampler: Sampler | None = None
    try:
        with backend(args.sqlite, tmp, log) as b:
            print(
                f"load: {args.turns} turns at once, {args.tokens} tokens at "
                f"{args.delay * 1000:g} ms, {args.workers} daphne process(es); {b.label}",
                flush=True,
            )
            log("migrating")
            env = runtime_env(b, "http://127.0.0.1:9")
            common.migrate(env)
            log("starting the fake LLM and daphne")
            fake = common.start_fake(args.tokens, args.delay, tmp, "load")
            env = runtime_env(b, fake.url)
            servers, pids = start_servers(env, args.workers, tmp)
            log(f"creating {args.turns} sessions")
            sessions = asyncio.run(create_sessions(servers, args.turns))

            sampler = Sampler(pids, b.pg_database)
            sampler.open()
            sampler.sample()
            pg_before = sampler.pg_peak
            sampler.start()
            log(f"load: {args.turns} turns (deadline {args.deadline:.0f} s)")
            cpu0 = sum(cpu_seconds(p) for p in pids), cpu_seconds(fake.pid), time.process_time()
            deadline = time.monotonic() + args.deadline
            turns, wall = asyncio.run(run_turns(servers, sessions, deadline, log))
            time.sleep(SETTLE)
            cpu1 = sum(cpu_seconds(p) for p in pids), cpu_seconds(fake.pid), time.process_time()
            sampler.finish()
            log("done; stopping")
            for server in servers:
                common.stop(server.proc)
            refs = measure_references(env, fake.url, sessions, args, tmp, log)
            common.stop_all()
            status = report(
                Figures(
                    turns=turns,
                    want_tokens=args.tokens,
                    wall=wall,
                    server_cpu=cpu1[0] - cpu0[0],
                    fake_cpu=cpu1[1] - cpu0[1],
                    client_cpu=cpu1[2] - cpu0[2],
                    workers=args.workers,
                    sampler=sampler,
                    pg_before=pg_before,
                    logs=[s.log for s in servers],
                )
            )
            if refs:
                runtime_cost = (cpu1[0] - cpu0[0]) / max(1, sum(t.tokens for t in turns))
                print("\nthe same load on other servers, one process each, in this run:")
                head = ("server", "CPU/token", "runtime / it", "TTFT p50 / p99", "completed")
                print_table([head, *(r.row(runtime_cost) for r in refs)], align="lrrrr")
            keep = keep or status != 0
            return status
    except (
        BenchError,
        OSError,
        subprocess.SubprocessError,
        psycopg.Error,
        redis.RedisError,
    ) as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        keep = True
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if sampler is not None:
            sampler.finish()
        common.stop_all()
        if keep:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
