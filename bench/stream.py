"""Streaming benchmark: the runtime (real daphne) against the fake LLM it relays, in one run.

    .venv/bin/python bench/stream.py [--turns N] [--reps N] [--concurrency N] [--no-floor]
                                     [--quick] [--keep-logs]

Starts the fake LLM (tests/fakellm.py) and daphne as subprocesses, then measures, each time
through the runtime and directly from the fake in the same run:

1. TTFT overhead: request start -> first assistant token (runtime) minus request start -> first
   content delta (fake directly); 200 tokens at 10 ms, one new session per turn, p50 and p95.
2. Throughput ratio: wall time of a 2,000-token reply streamed with no delay, runtime / direct.
3. CPU per turn: user+sys CPU of the daphne process (from /proc) over the measured turns / N,
   with the fake server's CPU per turn as a reference; also with N turns at once (info).
4. A floor (info): ``floor_app`` below, a bare relay with no Django, served by daphne the same
   way, so the runtime's figures can be read against what daphne itself costs on this machine.

The figures are informative: the exit status is 0 whenever the benchmark ran, whatever they are.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

if __package__ in (None, ""):  # run as a script: make the ``bench`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import (
    BenchError,
    Runtime,
    cpu_seconds,
    on_signal,
    pct,
    print_table,
    start_daphne,
    start_fake,
    stop,
    stop_all,
)

API_KEY = "bench-key"
AUTH = {"X-Internal-Auth": API_KEY}

# Targets (see bench/README.md).
TTFT_OVERHEAD_P50_MS = 5.0  # issue 9
THROUGHPUT_RATIO_MAX = 1.3  # issue 9
CPU_PER_TURN_MS = 10.0

TTFT_TOKENS, TTFT_DELAY = 200, 0.010
BULK_TOKENS, BULK_DELAY = 2000, 0.0
WARMUP_TURNS = 3


def runtime_env(tmp: Path, llm_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
        LLM_BASE_URL=llm_url,
        LLM_MAX_RETRIES="0",
        RATELIMIT_ENABLE="false",
        LOG_LEVEL="WARNING",
        INTERNAL_API_KEY=API_KEY,
        PYTHONUNBUFFERED="1",
    )
    return env


def migrate(tmp: Path) -> None:
    common.migrate(runtime_env(tmp, "http://127.0.0.1:9"))


def start_runtime(
    tmp: Path,
    llm_url: str,
    name: str,
    *,
    app: str = common.ASGI_APP,
    wrapper: list[str] | None = None,
) -> Runtime:
    log = tmp / f"daphne-{name}.log"
    return start_daphne(runtime_env(tmp, llm_url), log, app=app, wrapper=wrapper)


# --- A bare relay, for a floor ----------------------------------------------------------------
# The least any Python relay under daphne must do per token: read the LLM's SSE with httpx,
# decode each event, re-encode it as a PROTOCOL chunk, write it. No Django, no database.
# Served by daphne as ``bench.stream:floor_app`` with LLM_BASE_URL set.

_floor_client: httpx.AsyncClient | None = None
_CHUNK_KEYS = (
    "type", "content", "token", "is_final", "call_id", "tool_name", "arguments",
    "requires_approval", "error", "metadata",
)  # fmt: skip


def _floor_frame(token: str, is_final: bool) -> bytes:
    chunk = dict.fromkeys(_CHUNK_KEYS)
    chunk.update(type="assistant_message", content=token, token=token, is_final=is_final)
    chunk["requires_approval"] = False
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def _floor_client_get() -> httpx.AsyncClient:
    global _floor_client
    if _floor_client is None:
        # The same HTTP client stack as the runtime's (httpx over aiohttp), so the ratio
        # measures the runtime, not the client.
        from agents.llm.transport import NoCookies, Transport

        transport = Transport(tls=httpx.create_ssl_context(), max_connections=1000)
        _floor_client = httpx.AsyncClient(timeout=None, transport=transport, cookies=NoCookies())
    return _floor_client


async def _relay_start(scope, receive, send) -> bool:
    """Read the request and start an event stream; False when that was all (/health, or not
    HTTP)."""
    if scope["type"] != "http":
        return False
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["path"] == "/health":
        await send({"type": "http.response.body", "body": b"ok"})
        return False
    return True


async def floor_app(scope, receive, send):
    client = _floor_client_get()  # on /health already: its imports are not measured
    if not await _relay_start(scope, receive, send):
        return
    url = os.environ["LLM_BASE_URL"] + "/v1/chat/completions"
    body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with client.stream("POST", url, json=body) as r:
        buf = b""
        async for data in r.aiter_bytes():
            *events, buf = (buf + data).split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: {"):
                    continue
                for choice in json.loads(event[6:]).get("choices") or ():
                    if text := (choice.get("delta") or {}).get("content"):
                        await send(
                            {"type": "http.response.body", "body": _floor_frame(text, False),
                             "more_body": True}
                        )  # fmt: skip
    await send({"type": "http.response.body", "body": _floor_frame("", True)})


# The least a relay can do at all: the model's stream over a raw asyncio connection (HTTP/1.1
# by hand, one connection per turn), each event's text found with orjson and sent on as a
# chunk. What the server (daphne or uvicorn) costs per token, with next to nothing of ours.
# Served as ``bench.stream:bare_app``.


async def bare_app(scope, receive, send):
    if not await _relay_start(scope, receive, send):
        return
    host, port = os.environ["LLM_BASE_URL"].split("//", 1)[1].split("/", 1)[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"model":"fake","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (host.encode(), len(body), body)
    )
    await reader.readuntil(b"\r\n\r\n")  # the fake answers 200, chunked
    buf = b""
    try:
        while data := await reader.read(65536):
            *events, buf = (buf + data).split(b"\n\n")
            for event in events:
                start = event.find(b"data: {")
                if start < 0:
                    continue
                for choice in orjson.loads(event[start + 6 :]).get("choices") or ():
                    if text := (choice.get("delta") or {}).get("content"):
                        await send(
                            {"type": "http.response.body", "body": _bare_frame(text),
                             "more_body": True}
                        )  # fmt: skip
    finally:
        writer.close()
    await send({"type": "http.response.body", "body": _floor_frame("", True)})


def _bare_frame(token: str) -> bytes:
    chunk = dict.fromkeys(_CHUNK_KEYS)
    chunk.update(type="assistant_message", content=token, token=token, is_final=False)
    chunk["requires_approval"] = False
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


# --- Clients ---------------------------------------------------------------------------------


@dataclass
class Turn:
    ttft: float  # seconds, request start -> first token
    total: float  # seconds, request start -> end of the reply
    text: str


def expected_text(n: int) -> str:
    return "".join(f"tok{i} " for i in range(n))


def direct_turn(client: httpx.Client, fake_url: str) -> Turn:
    body = {
        "model": "fake",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Write a function."}],
    }
    parts: list[str] = []
    ttft = None
    start = time.perf_counter()
    with client.stream("POST", f"{fake_url}/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            r.read()
            raise BenchError(f"fake LLM answered {r.status_code}: {r.text[:300]}")
        lines = r.iter_lines()
        for line in lines:
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            event = json.loads(data)
            for choice in event.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if ttft is None:
                        ttft = time.perf_counter() - start
                    parts.append(content)
        total = time.perf_counter() - start
        for _ in lines:  # read to the end so the keep-alive connection is reused
            pass
    if ttft is None:
        raise BenchError("the fake LLM streamed no content")
    return Turn(ttft, total, "".join(parts))


def runtime_turn(client: httpx.Client, url: str, session_id: str) -> Turn:
    body = {
        "session_id": session_id,
        "message": {"type": "user_message", "content": "Write a function.", "agent_type": "coder"},
    }
    parts: list[str] = []
    ttft = None
    final = None
    start = time.perf_counter()
    with client.stream("POST", f"{url}/agent/message/stream", json=body, headers=AUTH) as r:
        if r.status_code != 200:
            r.read()
            raise BenchError(f"POST /agent/message/stream answered {r.status_code}: {r.text[:300]}")
        lines = r.iter_lines()
        for line in lines:
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("type") == "error":
                raise BenchError(f"the runtime streamed an error chunk: {chunk.get('error')!r}")
            if chunk.get("type") == "assistant_message" and chunk.get("token"):
                if ttft is None:
                    ttft = time.perf_counter() - start
                parts.append(chunk["token"])
            if chunk.get("is_final"):
                final = chunk
                break
        total = time.perf_counter() - start
        for _ in lines:  # the body closes right after the final chunk
            pass
    if final is None:
        raise BenchError("the runtime's stream ended without an is_final chunk")
    if ttft is None:
        raise BenchError(f"the runtime streamed no assistant token (final chunk: {final})")
    return Turn(ttft, total, "".join(parts))


async def _runtime_turn_async(client: httpx.AsyncClient, url: str, session_id: str) -> str:
    body = {
        "session_id": session_id,
        "message": {"type": "user_message", "content": "Write a function.", "agent_type": "coder"},
    }
    parts: list[str] = []
    async with client.stream("POST", f"{url}/agent/message/stream", json=body, headers=AUTH) as r:
        if r.status_code != 200:
            await r.aread()
            raise BenchError(f"POST /agent/message/stream answered {r.status_code}: {r.text[:300]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("type") == "error":
                raise BenchError(f"the runtime streamed an error chunk: {chunk.get('error')!r}")
            if chunk.get("type") == "assistant_message" and chunk.get("token"):
                parts.append(chunk["token"])
    return "".join(parts)


def concurrent_turns(url: str, sessions: list[str]) -> float:
    """All the sessions' turns at once; returns the wall time."""

    async def run() -> float:
        limits = httpx.Limits(max_connections=len(sessions) + 5)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            start = time.perf_counter()
            texts = await asyncio.gather(*(_runtime_turn_async(client, url, s) for s in sessions))
            wall = time.perf_counter() - start
        want = expected_text(TTFT_TOKENS)
        if bad := sum(text != want for text in texts):
            raise BenchError(f"{bad} of {len(texts)} concurrent turns got an incomplete reply")
        return wall

    return asyncio.run(run())


def create_sessions(client: httpx.Client, url: str, prefix: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        sid = f"{prefix}-{i}"
        r = client.post(f"{url}/sessions", json={"session_id": sid}, headers=AUTH)
        if r.status_code != 201:
            raise BenchError(f"POST /sessions answered {r.status_code}: {r.text[:300]}")
        ids.append(sid)
    return ids


def check_text(turn: Turn, n: int, where: str) -> None:
    if turn.text != expected_text(n):
        raise BenchError(
            f"{where}: the reply is not the fake's {n} tokens "
            f"(got {len(turn.text)} chars: {turn.text[:80]!r}...)"
        )


# --- Measurements ----------------------------------------------------------------------------


@dataclass
class Results:
    turns: int = 0
    reps: int = 0
    ttft_runtime: list[float] = field(default_factory=list)
    ttft_direct: list[float] = field(default_factory=list)
    bulk_runtime: list[float] = field(default_factory=list)
    bulk_direct: list[float] = field(default_factory=list)
    cpu_turn: float = 0.0  # daphne CPU seconds per sequential 200-token turn
    cpu_fake_turn: float = 0.0  # the fake's CPU for the same turns
    cpu_bulk: float = 0.0  # daphne CPU seconds per 2,000-token turn
    cpu_fake_bulk: float = 0.0
    concurrency: int = 0
    cpu_conc_turn: float = 0.0  # daphne CPU per turn with `concurrency` turns at once
    cpu_fake_conc_turn: float = 0.0
    conc_wall: float = 0.0
    floor_turns: int = 0
    cpu_floor_turn: float = 0.0  # a bare relay under daphne, same script
    cpu_fake_floor_turn: float = 0.0
    ttft_floor: list[float] = field(default_factory=list)


Log = Callable[[str], None]


def timed_cpu(pids: list[int], fn: Callable[[], Any]) -> list[float]:
    before = [cpu_seconds(p) for p in pids]
    fn()
    time.sleep(0.2)  # include work the server does after the final chunk
    return [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]


def phase_paced(tmp: Path, args: argparse.Namespace, res: Results, log: Log) -> None:
    """TTFT and CPU per turn on the 200-token / 10 ms script."""
    n = args.turns
    fake = start_fake(TTFT_TOKENS, TTFT_DELAY, tmp, "paced")
    try:
        with httpx.Client(timeout=60) as client:
            log(f"  direct: {WARMUP_TURNS} warm-up + {n} turns")
            for _ in range(WARMUP_TURNS):
                direct_turn(client, fake.url)
            for _ in range(n):
                t = direct_turn(client, fake.url)
                check_text(t, TTFT_TOKENS, "direct")
                res.ttft_direct.append(t.ttft)

            runtime = start_runtime(tmp, fake.url, "paced")
            try:
                log(f"  runtime: {WARMUP_TURNS} warm-up + {n} turns, a new session each")
                warm = create_sessions(client, runtime.url, "warm", WARMUP_TURNS)
                seq = create_sessions(client, runtime.url, "seq", n)
                conc = create_sessions(client, runtime.url, "conc", args.concurrency)
                for sid in warm:
                    check_text(runtime_turn(client, runtime.url, sid), TTFT_TOKENS, "runtime")
                time.sleep(0.2)

                def sequential() -> None:
                    for sid in seq:
                        t = runtime_turn(client, runtime.url, sid)
                        check_text(t, TTFT_TOKENS, "runtime")
                        res.ttft_runtime.append(t.ttft)

                d, f = timed_cpu([runtime.pid, fake.pid], sequential)
                res.turns, res.cpu_turn, res.cpu_fake_turn = n, d / n, f / n

                if args.concurrency:
                    log(f"  runtime: {args.concurrency} turns at once")
                    walls: list[float] = []
                    d, f = timed_cpu(
                        [runtime.pid, fake.pid],
                        lambda: walls.append(concurrent_turns(runtime.url, conc)),
                    )
                    res.concurrency = args.concurrency
                    res.cpu_conc_turn = d / args.concurrency
                    res.cpu_fake_conc_turn = f / args.concurrency
                    res.conc_wall = walls[0]
            finally:
                stop(runtime.proc)

            if args.floor:
                nf = max(2, min(n, 4))
                floor = start_runtime(tmp, fake.url, "floor", app="bench.stream:floor_app")
                try:
                    log(f"  bare relay (floor): 1 warm-up + {nf} turns")
                    runtime_turn(client, floor.url, "-")

                    def floor_turns() -> None:
                        for _ in range(nf):
                            t = runtime_turn(client, floor.url, "-")
                            check_text(t, TTFT_TOKENS, "bare relay")
                            res.ttft_floor.append(t.ttft)

                    d, f = timed_cpu([floor.pid, fake.pid], floor_turns)
                    res.floor_turns, res.cpu_floor_turn, res.cpu_fake_floor_turn = (
                        nf,
                        d / nf,
                        f / nf,
                    )
                finally:
                    stop(floor.proc)
    finally:
        stop(fake.proc)


def phase_bulk(tmp: Path, args: argparse.Namespace, res: Results, log: Log) -> None:
    """Throughput: 2,000 tokens with no delay, alternating direct and runtime."""
    reps = args.reps
    fake = start_fake(BULK_TOKENS, BULK_DELAY, tmp, "bulk")
    runtime = start_runtime(tmp, fake.url, "bulk")
    try:
        with httpx.Client(timeout=120) as client:
            log(f"  {reps} reps of {BULK_TOKENS} tokens each way (+1 warm-up)")
            sessions = create_sessions(client, runtime.url, "bulk", reps + 1)
            direct_turn(client, fake.url)
            check_text(runtime_turn(client, runtime.url, sessions[0]), BULK_TOKENS, "runtime")
            time.sleep(0.2)
            cpu_d = cpu_f = 0.0
            for sid in sessions[1:]:  # alternate, so drift hits both sides alike
                t = direct_turn(client, fake.url)
                check_text(t, BULK_TOKENS, "direct")
                res.bulk_direct.append(t.total)
                turns: list[Turn] = []

                # A def rather than a lambda: mypy cannot infer a lambda with default arguments.
                def run(sid: str = sid, out: list[Turn] = turns) -> None:
                    out.append(runtime_turn(client, runtime.url, sid))

                d, f = timed_cpu([runtime.pid, fake.pid], run)
                check_text(turns[0], BULK_TOKENS, "runtime")
                res.bulk_runtime.append(turns[0].total)
                cpu_d += d
                cpu_f += f
            res.reps, res.cpu_bulk, res.cpu_fake_bulk = reps, cpu_d / reps, cpu_f / reps
    finally:
        stop(runtime.proc)
        stop(fake.proc)


def report(res: Results) -> None:
    ms = 1000.0
    rt50, rt95 = pct(res.ttft_runtime, 50) * ms, pct(res.ttft_runtime, 95) * ms
    dt50, dt95 = pct(res.ttft_direct, 50) * ms, pct(res.ttft_direct, 95) * ms
    bulk_rt = statistics.median(res.bulk_runtime) * ms
    bulk_d = statistics.median(res.bulk_direct) * ms
    ratio = bulk_rt / bulk_d if bulk_d > 0 else float("inf")
    cpu = res.cpu_turn * ms
    per_tok = f"{TTFT_TOKENS} tok @ {TTFT_DELAY * ms:.0f} ms"

    def verdict(good: bool) -> str:
        return "PASS" if good else "MISS"

    rows: list[tuple[str, ...]] = [
        ("measure", "runtime", "direct", "overhead", "target", "result"),
        (
            f"TTFT p50, ms ({res.turns} turns)",
            f"{rt50:.1f}",
            f"{dt50:.1f}",
            f"{rt50 - dt50:+.1f} ms",
            f"<= +{TTFT_OVERHEAD_P50_MS:.0f} ms",
            verdict(rt50 - dt50 <= TTFT_OVERHEAD_P50_MS),
        ),
        (
            f"TTFT p95, ms ({res.turns} turns)",
            f"{rt95:.1f}",
            f"{dt95:.1f}",
            f"{rt95 - dt95:+.1f} ms",
            "-",
            "info",
        ),
        (
            f"{BULK_TOKENS} tokens no delay, ms (median of {res.reps})",
            f"{bulk_rt:.1f}",
            f"{bulk_d:.1f}",
            f"x{ratio:.2f}",
            f"<= x{THROUGHPUT_RATIO_MAX}",
            verdict(ratio <= THROUGHPUT_RATIO_MAX),
        ),
        (
            f"CPU per turn, ms ({per_tok}, sequential)",
            f"{cpu:.1f}",
            f"fake {res.cpu_fake_turn * ms:.1f}",
            f"{cpu / TTFT_TOKENS * ms:.0f} us/token",
            f"<= {CPU_PER_TURN_MS:.0f} ms",
            verdict(cpu <= CPU_PER_TURN_MS),
        ),
    ]
    if res.concurrency:
        c = res.cpu_conc_turn * ms
        rows.append(
            (
                f"CPU per turn, ms ({res.concurrency} turns at once)",
                f"{c:.1f}",
                f"fake {res.cpu_fake_conc_turn * ms:.1f}",
                f"{c / TTFT_TOKENS * ms:.0f} us/token",
                "-",
                "info",
            )
        )
    rows.append(
        (
            f"CPU per {BULK_TOKENS}-token turn, ms (no delay)",
            f"{res.cpu_bulk * ms:.1f}",
            f"fake {res.cpu_fake_bulk * ms:.1f}",
            f"{res.cpu_bulk / BULK_TOKENS * 1e6:.0f} us/token",
            "-",
            "info",
        )
    )
    if res.floor_turns:
        f = res.cpu_floor_turn * ms
        rows.append(
            (
                f"floor: bare relay under daphne, CPU/turn ms ({res.floor_turns} turns)",
                f"{f:.1f}",
                f"fake {res.cpu_fake_floor_turn * ms:.1f}",
                f"{f / TTFT_TOKENS * ms:.0f} us/token",
                "-",
                "info",
            )
        )
        rows.append(
            (
                "floor: bare relay TTFT p50, ms",
                f"{pct(res.ttft_floor, 50) * ms:.1f}",
                f"{dt50:.1f}",
                f"{(pct(res.ttft_floor, 50) * ms) - dt50:+.1f} ms",
                "-",
                "info",
            )
        )
    print_table(rows)
    print()
    print(
        "direct: the same fake LLM script read by this client with no runtime in between.\n"
        "CPU: user+sys of the daphne process (all threads) from /proc/<pid>/stat over the "
        "measured turns;\n  'fake N' is the fake LLM's own CPU for those turns, for scale.\n"
        "floor: a 30-line ASGI app under daphne that relays the same stream (httpx in, JSON "
        "re-encode, write);\n  no Django, no database - what any Python relay on daphne pays "
        "here."
    )
    if res.concurrency:
        print(f"{res.concurrency} turns at once took {res.conc_wall:.2f} s wall.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Streaming benchmark: the runtime under daphne vs the fake LLM directly."
    )
    parser.add_argument("--turns", type=int, default=20, help="sequential measured turns (20)")
    parser.add_argument("--reps", type=int, default=5, help="2,000-token repetitions (5)")
    parser.add_argument(
        "--concurrency", type=int, default=20, help="turns at once for the load row (20; 0: skip)"
    )
    parser.add_argument("--no-floor", dest="floor", action="store_false", help="skip the floor")
    parser.add_argument("--quick", action="store_true", help="8 turns, 3 reps, no floor (~45 s)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.turns, args.reps, args.floor = min(args.turns, 8), min(args.reps, 3), False
        args.concurrency = min(args.concurrency, 10)
    if args.turns < 1 or args.reps < 1 or args.concurrency < 0:
        parser.error("--turns and --reps must be at least 1, --concurrency at least 0")

    signal.signal(signal.SIGTERM, on_signal)
    atexit.register(stop_all)
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    began = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - began:5.1f}s] {msg}", file=sys.stderr, flush=True)

    res = Results()
    failed = True
    try:
        log(f"migrating {tmp / 'bench.sqlite3'}")
        migrate(tmp)
        log(f"phase 1: {TTFT_TOKENS} tokens at {TTFT_DELAY * 1000:.0f} ms - TTFT and CPU")
        phase_paced(tmp, args, res, log)
        log(f"phase 2: {BULK_TOKENS} tokens, no delay - throughput")
        phase_bulk(tmp, args, res, log)
        log("done")
        failed = False
    except (
        BenchError,
        httpx.HTTPError,
        httpx.StreamError,
        OSError,
        subprocess.SubprocessError,
    ) as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        failed = False  # nothing to investigate: drop the logs unless --keep-logs
        return 130
    finally:
        stop_all()
        if failed or args.keep_logs:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
