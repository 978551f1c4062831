"""A real HTTP server that plays an OpenAI-compatible LLM, for tests and benchmarks.

In tests::

    fake = FakeLLM().start()
    fake.enqueue(text("Hello there"), status(500))
    ...  # point a client at fake.url
    fake.stop()

Standalone (benchmarks, end-to-end runs against daphne)::

    python tests/fakellm.py --port 0 --default-tokens 2000 --delay 0.01
    # prints "READY http://127.0.0.1:PORT" once listening; stop it with SIGTERM or Ctrl-C

Stdlib only: a minimal HTTP/1.1 server on asyncio with keep-alive and chunked replies.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import http
import json
import math
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

IGNORED_TOOLS_REPLY = "I would read the file, but I have no tools."
FAKE_CHARS_PER_TOKEN = 3.2  # the fake's own tokenizer: a small vocabulary, pessimistic

# --- Scripts: what the server answers to one request -------------------------------------------


@dataclass(frozen=True)
class Script:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None  # a whole body, sent with Content-Length
    chunks: tuple[tuple[float, bytes], ...] = ()  # (pause before it, bytes): one HTTP chunk each
    drop: bool = False  # close the connection after the chunks, leaving the chunked body unfinished
    hang: bool = False  # read the request and never answer
    calls_tools: bool = False  # a tool-call reply (see FakeLLM.needs_tool_choice)
    # Until ``gate`` is set: answer nothing (hold_at -1, gated()), or stop before chunk number
    # ``hold_at`` (held()): a test sees a reply held back, or its first part arrive, and only
    # then lets the rest come (ordering, not timing).
    hold_at: int = -1
    gate: threading.Event | None = None


_SSE = (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"))
_DONE = b"data: [DONE]\n\n"


def _event(obj: dict[str, Any]) -> bytes:
    # Raw UTF-8 like many real servers, so clients must not split lines on U+2028 and friends.
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    # OpenAI sends usage in a last chunk with empty choices when include_usage is set.
    return {**_chunk({}), "choices": [], "usage": _usage(prompt, completion)}


def _stream(
    deltas: list[dict[str, Any]],
    *,
    finish_reason: str | None = "stop",
    usage: tuple[int, int] | None = None,
    delay: float = 0.0,
    first_token_delay: float = 0.0,
    done: bool = True,
    drop: bool = False,
) -> Script:
    chunks: list[tuple[float, bytes]] = [
        (0.0, _event(_chunk({"role": "assistant", "content": ""})))
    ]
    for i, delta in enumerate(deltas):
        chunks.append((first_token_delay if i == 0 else delay, _event(_chunk(delta))))
    if not drop:
        chunks.append((0.0, _event(_chunk({}, finish_reason))))
        if usage is not None:
            chunks.append((0.0, _event(_usage_chunk(*usage))))
        if done:
            chunks.append((0.0, _DONE))
    return Script(headers=_SSE, chunks=tuple(chunks), drop=drop)


def _pieces(reply: str, chunk_size: int) -> list[str]:
    if chunk_size > 0:
        return [reply[i : i + chunk_size] for i in range(0, len(reply), chunk_size)]
    return re.findall(r"\S+\s*|\s+", reply)  # word-ish tokens, whitespace kept


def text(
    reply: str,
    *,
    chunk_size: int = 0,
    delay: float = 0.0,
    first_token_delay: float = 0.0,
    usage: tuple[int, int] | None | Literal["auto"] = "auto",
    done: bool = True,
    finish_reason: str = "stop",
    cut: bool = False,
) -> Script:
    """A streamed text reply; ``chunk_size=0`` splits into word-ish tokens.

    ``usage="auto"`` reports (10, number of chunks); ``done=False`` omits ``data: [DONE]``;
    ``finish_reason="length"`` is a reply the provider cut at its length limit; ``cut=True``
    closes the connection after the text (no finish_reason, no [DONE]: a broken stream).
    """
    pieces = _pieces(reply, chunk_size)
    return _stream(
        [{"content": p} for p in pieces],
        finish_reason=finish_reason,
        usage=(10, len(pieces)) if usage == "auto" else usage,
        delay=delay,
        first_token_delay=first_token_delay,
        done=done,
        drop=cut,
    )


def tokens(n: int, *, delay: float = 0.0, first_token_delay: float = 0.0) -> Script:
    """n deltas "tok0 ", "tok1 ", ... (the benchmarks' default reply)."""
    return _stream(
        [{"content": f"tok{i} "} for i in range(n)],
        usage=(10, n),
        delay=delay,
        first_token_delay=first_token_delay,
    )


def tool_calls(
    calls: list[tuple[str, str, str]],
    *,
    text_before: str = "",
    split: int = 3,
    repeat_name: bool = False,
    interleave: bool = False,
) -> Script:
    """Streamed tool calls: (id, name, arguments JSON) each, told apart by ``index``.

    The first fragment of a call carries its id and name, then the arguments follow in
    ``split`` fragments. ``repeat_name`` repeats id and name in every fragment (llama.cpp does);
    ``interleave`` alternates the calls' fragments instead of sending them one after another.
    """
    per_call: list[list[dict[str, Any]]] = []
    for index, (call_id, name, arguments) in enumerate(calls):
        head = {"index": index, "id": call_id, "type": "function"}
        frags: list[dict[str, Any]] = [{**head, "function": {"name": name, "arguments": ""}}]
        size = max(1, -(-len(arguments) // max(1, split)))
        for part in (arguments[i : i + size] for i in range(0, len(arguments), size)):
            function: dict[str, Any] = {"arguments": part}
            frag: dict[str, Any] = {"index": index, "function": function}
            if repeat_name:
                frag.update(head)
                function["name"] = name
            frags.append(frag)
        per_call.append(frags)
    if interleave:
        ordered = [f for group in _zip_longest(per_call) for f in group]
    else:
        ordered = [f for frags in per_call for f in frags]
    deltas: list[dict[str, Any]] = [{"content": p} for p in _pieces(text_before, 0)]
    # content: null beside tool calls, as OpenAI sends it.
    deltas += [{"content": None, "tool_calls": [f]} for f in ordered]
    script = _stream(deltas, finish_reason="tool_calls", usage=(10, len(deltas)))
    return dataclasses.replace(script, calls_tools=True)


def _zip_longest(groups: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    width = max((len(g) for g in groups), default=0)
    return [[g[i] for g in groups if i < len(g)] for i in range(width)]


def status(
    code: int, body: dict[str, Any] | str | None = None, headers: dict[str, str] | None = None
) -> Script:
    """A whole reply with this status, e.g. ``status(429, headers={"Retry-After": "1"})``."""
    if body is None:
        body = {"error": {"message": f"fake upstream error {code}", "type": "fake", "code": code}}
    if isinstance(body, dict):
        data, content_type = json.dumps(body).encode(), "application/json"
    else:
        data, content_type = body.encode(), "text/plain; charset=utf-8"
    extra = tuple((headers or {}).items())
    return Script(status=code, headers=(("Content-Type", content_type), *extra), body=data)


def openai_overflow(window: int = 8192, prompt: int = 9000) -> dict[str, Any]:
    """OpenAI's body for a request longer than the model's context (sent with a 400)."""
    return {
        "error": {
            "message": f"This model's maximum context length is {window} tokens. However, your "
            f"messages resulted in {prompt} tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


def garbage() -> Script:
    """A 200 event stream whose data is not JSON."""
    return Script(headers=_SSE, chunks=((0.0, b"data: this is not json\n\n"), (0.0, _DONE)))


def drop_after(n_chunks: int) -> Script:
    """n text chunks, then the connection closes: no finish_reason, no [DONE]."""
    return _stream([{"content": f"tok{i} "} for i in range(n_chunks)], drop=True)


def json_reply(content: str, tool_calls: list[tuple[str, str, Any]] | None = None) -> Script:
    """A non-streaming application/json reply; tool-call arguments may be str or object."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in tool_calls
        ]
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": _usage(10, max(1, len(content.split()))),
    }
    return Script(headers=(("Content-Type", "application/json"),), body=json.dumps(body).encode())


def hang() -> Script:
    return Script(hang=True)


def held(script: Script, *, after: int) -> tuple[Script, threading.Event]:
    """The streamed ``script`` stopping after ``after`` deltas until the returned event is set."""
    gate = threading.Event()
    # chunks[0] is the role-only opening chunk: the deltas follow it.
    return dataclasses.replace(script, hold_at=after + 1, gate=gate), gate


def gated(script: Script, gate: threading.Event) -> Script:
    """``script``, answered only once ``gate`` is set."""
    return dataclasses.replace(script, gate=gate, hold_at=-1)


MULTILINE_TEXT = "Hello multiline world\u2028!"


def multiline() -> Script:
    """A valid stream using multi-line data fields, comments, other fields, CRLF and CR.

    Its text is ``MULTILINE_TEXT``; the bytes are cut between every CR and LF and mid-line.
    """
    first = json.dumps(_chunk({"content": "Hello"}))
    last = json.dumps(_chunk({"content": " world\u2028!"}), ensure_ascii=False)
    cut = first.index('"choices"')
    raw = (
        ": a comment line\r\n"
        "event: message\r\nid: 1\r\nretry: 5000\r\n"
        f"data: {first[:cut]}\r\n"
        f"data:{first[cut:]}\r\n"  # no space after the colon
        "\r\n"
        ": keep-alive\r\n\r\n"  # a comment-only block dispatches nothing
        f"data: {json.dumps(_chunk({'content': ' multiline'}))}\r\r"  # CR line endings
        f"data: {last}\n\n"  # LF, with a raw U+2028 inside the JSON
        f"data: {json.dumps(_chunk({}, 'stop'))}\r\n\r\n"
        f"data: {json.dumps(_usage_chunk(3, 3))}\r\n\r\n"
        "data: [DONE]\r\n\r\n"
    ).encode()
    cuts = sorted({m.start() + 1 for m in re.finditer(rb"\r\n", raw)} | set(range(5, len(raw), 37)))
    edges = [0, *cuts, len(raw)]
    # A short pause between pieces so they reach the client as separate reads.
    pieces = tuple((0.002, raw[a:b]) for a, b in zip(edges, edges[1:], strict=False) if b > a)
    return Script(headers=_SSE, chunks=pieces)


def classify(agent: str, confidence: float = 0.9) -> Script:
    """The orchestrator's routing reply: JSON text naming the agent."""
    reply = {
        "agent": agent,
        "confidence": confidence,
        "reasoning": f"The request matches the {agent} agent.",
    }
    return text(json.dumps(reply), chunk_size=16)


def prompt_tokens(payload: dict[str, Any]) -> int:
    """The fake's own count of a request's prompt: its characters (contents, tool calls, tool
    definitions) at FAKE_CHARS_PER_TOKEN, plus 4 per message. Independent of agents.tokens."""
    chars = len(json.dumps(payload.get("tools") or [], separators=(",", ":")))
    messages = payload.get("messages") or []
    for message in messages:
        chars += len(message.get("content") or "")
        for call in message.get("tool_calls") or []:
            chars += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return math.ceil(chars / FAKE_CHARS_PER_TOKEN) + 4 * len(messages)


# --- The server ---------------------------------------------------------------------------------


class FakeLLM:
    """An OpenAI-compatible server on 127.0.0.1 answering each request with the next script."""

    def __init__(self, *, port: int = 0) -> None:
        self.port = port
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self.default: Script = text("OK")
        self.models_status = 200  # what GET /v1/models answers
        self.record = True  # False in long benchmarks, so requests do not pile up in memory
        self.connections = 0  # TCP connections accepted (to check keep-alive reuse)
        # Requests that came as to an HTTP proxy (absolute-form target): their origins.
        self.proxied: list[str] = []
        # Like llama.cpp's function calling: tools are ignored unless tool_choice is sent (a
        # tool-call script is answered with IGNORED_TOOLS_REPLY instead).
        self.needs_tool_choice = False
        # A model with this window (in prompt_tokens() units): a longer request gets llama.cpp's
        # 400 and leaves the queued script for the next request.
        self.context_tokens: int | None = None
        self.refused: list[dict[str, Any]] = []  # requests refused as too long
        # Answers a request when nothing is queued, instead of ``default``.
        self.responder: Callable[[dict[str, Any]], Script] | None = None
        self._queue: collections.deque[Script] = collections.deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def enqueue(self, *scripts: Script) -> None:
        with self._lock:
            self._queue.extend(scripts)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.proxied.clear()
            self.connections = 0
            self.models_status = 200
            self.needs_tool_choice = False
            self.context_tokens = None
            self.refused.clear()
            self.responder = None

    def _next_script(self, payload: dict[str, Any]) -> Script:
        with self._lock:
            if self._queue:
                script = self._queue.popleft()
            elif self.responder is not None:
                script = self.responder(payload)
            else:
                script = self.default
        tools_ignored = payload.get("tool_choice") in (None, "none")
        if script.calls_tools and self.needs_tool_choice and tools_ignored:
            return text(IGNORED_TOOLS_REPLY)
        return script

    def _too_long(self, payload: dict[str, Any]) -> Script | None:
        if self.context_tokens is None:
            return None
        used = prompt_tokens(payload)
        if used <= self.context_tokens:
            return None
        self.refused.append(payload)
        error = {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": used,
            "n_ctx": self.context_tokens,
        }
        return status(400, {"error": error})

    def start(self) -> FakeLLM:
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(ready, errors)), name="fakellm", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeLLM did not start")
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    async def _serve(self, ready: threading.Event, errors: list[BaseException]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=2048)
        except OSError as exc:
            errors.append(exc)
            ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        ready.set()
        await self._stopping.wait()
        server.close()
        # Hanging and streaming handlers would otherwise keep the loop (and stop()) waiting.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away
        except ValueError:
            pass  # not HTTP we understand: drop the connection
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio logs a cancelled connection task as an error)
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection should close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # closed between requests
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        keep_alive = headers.get("connection", "").lower() != "close"
        if "://" in target:  # absolute-form: asked as a proxy; it answers for any origin
            scheme, _, rest = target.partition("://")
            origin, slash, target = rest.partition("/")
            self.proxied.append(f"{scheme}://{origin}")
            target = slash + target
        path = target.split("?", 1)[0]

        if method == "GET" and path == "/v1/models":
            models = {"object": "list", "data": [{"id": "fake", "object": "model"}]}
            return await self._whole(writer, status(self.models_status, models)) and keep_alive
        if method != "POST" or path != "/v1/chat/completions":
            return await self._whole(writer, status(404)) and keep_alive
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return await self._whole(writer, status(400)) and keep_alive
        refusal = self._too_long(payload)
        if refusal is not None:
            return await self._whole(writer, refusal) and keep_alive
        if self.record:
            payload["headers"] = headers
            self.requests.append(payload)
        script = self._next_script(payload)
        while script.gate is not None and script.hold_at < 0 and not script.gate.is_set():
            await asyncio.sleep(0.01)  # polled: a thread blocked in wait() would outlive stop()
        if script.hang:
            # Hold the connection without answering until the client gives up or we stop.
            while await reader.read(65536):
                pass
            return False
        if script.body is not None:
            return await self._whole(writer, script) and keep_alive
        return await self._streamed(writer, script) and keep_alive

    @staticmethod
    def _head(script: Script, extra: tuple[tuple[str, str], ...]) -> bytes:
        try:
            reason = http.HTTPStatus(script.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {script.status} {reason}"]
        lines += [f"{k}: {v}" for k, v in (*script.headers, *extra)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _whole(self, writer: asyncio.StreamWriter, script: Script) -> bool:
        body = script.body or b""
        writer.write(self._head(script, (("Content-Length", str(len(body))),)) + body)
        await writer.drain()
        return True

    async def _streamed(self, writer: asyncio.StreamWriter, script: Script) -> bool:
        writer.write(self._head(script, (("Transfer-Encoding", "chunked"),)))
        for index, (pause, data) in enumerate(script.chunks):
            if index == script.hold_at and script.gate is not None:
                await writer.drain()
                while not script.gate.is_set():
                    await asyncio.sleep(0.02)
            if pause > 0:
                await writer.drain()
                await asyncio.sleep(pause)
            # Back-to-back chunks are written without waiting, as a fast server would.
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        if script.drop:
            await writer.drain()
            return False  # closing now leaves the chunked body unfinished
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible LLM server.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--default-tokens", type=int, default=0, help="reply with N tokens")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between tokens")
    args = parser.parse_args(argv)

    fake = FakeLLM(port=args.port)
    fake.record = False
    if args.default_tokens > 0:
        fake.default = tokens(args.default_tokens, delay=args.delay)
    fake.start()
    print(f"READY {fake.url}", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(0.5):
        pass
    fake.stop()


if __name__ == "__main__":
    main()
