"""A fault-injecting TCP proxy for tests: it sits between the runtime and PostgreSQL or Redis.

::

    proxy = FaultProxy("127.0.0.1", 5432).start()   # listens on proxy.port
    proxy.blip(2.5)        # drop every connection and refuse new ones for 2.5 s
    proxy.down(); proxy.up()
    proxy.blip_on(b'"turn_expires_at" = NULL', 2.0)  # blip when a client sends these bytes
    proxy.stop()

"Refused" means accepted and closed at once, so clients fail fast instead of hanging. It runs
its own event loop in a thread, so sync and async tests (and the daphne processes they start)
can all use it. Stdlib only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._down_until = 0.0  # time.monotonic(); refusing while now < this
        self._trigger: tuple[bytes, float] | None = None
        self.triggered = threading.Event()
        self.connections = 0  # accepted and forwarded, in total

    # --- control, from any thread --------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            self._drop_all()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def blip(self, seconds: float) -> None:
        """Drop every open connection and refuse new ones for ``seconds``."""
        self._call(self._blip, seconds)

    def down(self) -> None:
        self.blip(10**9)

    def up(self) -> None:
        self._down_until = 0.0

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def blip_on(self, pattern: bytes, seconds: float) -> None:
        """Once a client sends ``pattern`` (a query, say), blip for ``seconds`` right then,
        before the server sees it."""
        self.triggered.clear()
        self._trigger = (pattern, seconds)

    # --- inside the loop -----------------------------------------------------------------------

    def _call(self, fn: object, *args: object) -> None:
        async def run() -> None:
            fn(*args)  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def _blip(self, seconds: float) -> None:
        self._down_until = time.monotonic() + seconds
        self._drop_all()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            self._abort(writer)

    def _abort(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        with contextlib.suppress(Exception):
            writer.transport.abort()  # a reset, as when a server or the network goes away

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_down:
            self._abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._abort(writer)
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer, watch=True),
            self._pipe(up_reader, writer, watch=False),
            return_exceptions=True,
        )
        self._abort(writer)
        self._abort(up_writer)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool
    ) -> None:
        try:
            await self._forward(reader, writer, watch=watch)
        except (ConnectionError, OSError):  # either side went away: so does the other
            pass
        self._abort(writer)

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool
    ) -> None:
        while data := await reader.read(65536):
            if writer not in self._writers:
                return
            if watch and self._trigger is not None and self._trigger[0] in data:
                seconds = self._trigger[1]
                self._trigger = None
                self.triggered.set()
                self._blip(seconds)
                return
            writer.write(data)
            await writer.drain()
