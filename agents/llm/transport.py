"""httpx over aiohttp: the model's streams read through aiohttp's connection pool and C parser.

httpx stays the client (requests, responses, errors and timeouts as the rest of the code knows
them); only the transport underneath changes. httpcore reads a response body through h11 and an
anyio timeout scope per read, which cost ~45 % of a busy server's CPU relaying streamed tokens;
through aiohttp the same reads cost a quarter of that (bench/README.md).

httpx-aiohttp (the transport the OpenAI SDK offers as its aiohttp client) maps aiohttp's errors
to httpx's, but a refused connection comes out as ``ConnectTimeout`` and a server that hangs up
as ``ConnectTimeout`` too; the callers tell those cases apart, so the mapping is redone here from
the original error.

Proxies come from the environment (``HTTP(S)_PROXY``, ``NO_PROXY``), as with httpx's own
transport, read once per origin: aiohttp's ``trust_env`` would read them on every request and
look in ``~/.netrc`` on a thread for every request too.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from http.cookiejar import Cookie, CookieJar
from typing import Any

import aiohttp
import httpx
import yarl
from aiohttp.helpers import get_env_proxy_for_url
from httpx_aiohttp import AiohttpTransport

KEEPALIVE_SECONDS = 5.0  # httpx's default keep-alive expiry


def _httpx_error(exc: BaseException) -> httpx.TransportError:
    """The httpx exception a request's aiohttp error stands for."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, DNS, TLS
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError):  # e.g. a stale keep-alive connection
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientOSError):  # reset while sending or reading the head
        return httpx.ReadError(message)
    return httpx.TransportError(message)


class _Body(httpx.AsyncByteStream):
    """A response body whose every transport failure is an httpx ``ReadError``."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx.TransportError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except (httpx.TransportError, aiohttp.ClientError, OSError):
            pass  # a connection that broke is simply not reused


def env_proxy(url: httpx.URL) -> httpx.Proxy | None:
    """The proxy the environment names for ``url``'s origin (``NO_PROXY`` honoured), if any."""
    try:
        proxy_url, auth = get_env_proxy_for_url(yarl.URL(str(url)))
    except LookupError:
        return None
    return httpx.Proxy(str(proxy_url), auth=(auth.login, auth.password) if auth else None)


class NoCookies(CookieJar):
    """A model API needs no cookies; httpx would parse every response's into its jar
    (through urllib's cookie machinery: ~12 % of the CPU of sending a model request)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Cookie) -> None:
        pass


class Transport(AiohttpTransport):
    """One aiohttp session per transport, made on first use in the loop that uses it."""

    def __init__(self, *, tls: ssl.SSLContext, max_connections: int) -> None:
        self._tls = tls
        self._max_connections = max_connections
        self._proxies: dict[tuple[str, str, int | None], httpx.Proxy | None] = {}
        super().__init__(verify=tls, client=self._session)

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ssl=self._tls,
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    def abandon(self) -> None:
        """Close the session's connections now, without awaiting (its loop may be closed):
        aiohttp would otherwise report an unclosed session when it is collected."""
        session = self.client
        if isinstance(session, aiohttp.ClientSession) and session.connector is not None:
            with contextlib.suppress(Exception):
                session.connector._close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port)
        if origin not in self._proxies:
            self._proxies[origin] = env_proxy(url)
        # The base class reads it before its first await: no other request can change it between.
        self.proxy = self._proxies[origin]
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            cause = exc.__cause__
            if cause is None:
                raise
            raise _httpx_error(cause) from cause
        except (aiohttp.ClientError, OSError) as exc:  # the ones httpx-aiohttp leaves unmapped
            raise _httpx_error(exc) from exc
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream)
        return response
