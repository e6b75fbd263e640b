"""httpx's one-method transport interface over aiohttp: the LLM provider's default wire.

Why: the provider (``http_provider.HttpxChatProvider``) speaks to a ``ChatTransport``, httpx's
``handle_async_request`` interface. httpx's own transport (httpcore, h11 and anyio, all pure Python)
cost 3.4 ms of client CPU per non-streamed call to the scripted server, aiohttp (a C HTTP parser on
asyncio's own streams) 0.6-0.7 ms; streamed 60 tokens, 3.9-4.3 against 1.8-1.9 ms (``chatstream dev
llm-client-cpu``, one run, same calls). At one call per turn that was the worker's largest single cost
after tracing. The provider, its error mapping and its tests stay the same whatever runs underneath.

This adapter keeps httpx transport semantics: the request goes out as built (no automatic
``Accept-Encoding``), the body comes back raw and streamed, aiohttp's errors become httpx's
(``TimeoutException``, ``TransportError``), and the request's ``timeout`` extension sets the connect
and read bounds. One aiohttp session (connection pool) per event loop: a session belongs to the loop
that made it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx

_DROPPED_HEADERS = {"host", "content-length"}  # aiohttp writes both itself


class AiohttpTransport:
    """A ``ChatTransport`` (``handle_async_request`` + ``aclose``) with an aiohttp connection pool."""

    def __init__(self, *, max_connections: int = 256) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_for_this_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("Accept-Encoding", "User-Agent")
            )
            self._loop = loop
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout") or {}
        connect = timeout.get("connect")
        pool = timeout.get("pool")
        client_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None and pool is None else (connect or 0) + (pool or 0),
            sock_connect=connect,
            sock_read=timeout.get("read"),
        )
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                   if k.decode("latin-1").lower() not in _DROPPED_HEADERS]
        try:
            response = await self._session_for_this_loop().request(
                request.method, str(request.url), data=request.content, headers=headers, timeout=client_timeout,
                allow_redirects=False,
            )
        except Exception as exc:  # cancellation passes through as it is
            raise _as_httpx_error(exc, request) from exc
        return httpx.Response(
            response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_Body(response, request),
            request=request,
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class _Body(httpx.AsyncByteStream):
    """The response body as it arrives; closing before the end drops the connection (not reused)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _as_httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()


def _as_httpx_error(exc: Exception, request: httpx.Request) -> Exception:
    """aiohttp's failure as the httpx exception the provider maps; anything else unchanged."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc) or "connect timed out", request=request)
    if isinstance(exc, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(str(exc) or "read timed out", request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc), request=request)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request)
    return exc
