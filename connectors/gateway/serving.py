"""The gateway under uvicorn, with limits on slow, idle and excess connections.

What uvicorn's public options give, and what they are set from (``CHATSTREAM_*``):

- ``timeout_keep_alive`` <- ``gateway_keep_alive_s``: a keep-alive connection idle *after a response*
  is closed;
- ``limit_concurrency`` <- ``gateway_max_connections``: beyond that many open connections (or running
  requests) a new request gets 503 and its connection is closed;
- ``h11_max_incomplete_event_size`` <- ``gateway_max_header_bytes``: a connection whose request head is
  still incomplete past that many bytes gets 400 and is closed (what a slow head may make the gateway
  buffer). It exists for the h11 protocol only, so the gateway runs uvicorn's h11 protocol.

What uvicorn (0.54) cannot do: it has no read timeout. A connection that never sends a byte, one that
sends half a request head and stalls (slowloris), or one that trickles its body is held for ever
(``timeout_keep_alive`` only starts after a response). So ``ReadDeadlines`` adds one: a connection must
deliver each request within ``gateway_read_timeout_s`` (from its opening, or from the end of the
previous response), else it is closed. It is built on uvicorn's public ``http=`` option (the protocol
class): ``ReadDeadlineProtocol`` *wraps* an ``H11Protocol`` and forwards every asyncio call to it (no
uvicorn method is overridden), and an ASGI middleware tells it when the deadline stops and starts
again: it stops once the request is read (no body, or its last chunk delivered to the app) or the
app starts answering, and starts again when the response is complete. While the app answers there is
no deadline, so an SSE stream that lasts an hour is never cut. The middleware finds its connection by
the ASGI ``client`` address, which is the socket's peer because the gateway never rewrites it from
proxy headers (``proxy_headers=False``).

(hypercorn has a ``read_timeout``, but it bounds every socket read, also while an SSE response
streams and the client legitimately sends nothing, so it would cut SSE streams.)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("chatstream.gateway.connections")

Peer = tuple[str, int]


@dataclass(frozen=True)
class ConnectionLimits:
    read_timeout_s: float
    keep_alive_s: float
    max_connections: int
    max_header_bytes: int

    @classmethod
    def from_settings(cls, settings: Any) -> "ConnectionLimits":
        return cls(
            read_timeout_s=settings.gateway_read_timeout_s,
            keep_alive_s=settings.gateway_keep_alive_s,
            max_connections=settings.gateway_max_connections,
            max_header_bytes=settings.gateway_max_header_bytes,
        )


def peer_of(transport: asyncio.BaseTransport) -> Peer | None:
    """The remote address as uvicorn puts it into the ASGI scope's ``client``."""
    info = transport.get_extra_info("peername")
    if isinstance(info, (list, tuple)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


class ReadDeadlineProtocol(asyncio.Protocol):
    """One connection: uvicorn's H11Protocol inside, plus a deadline for reading the current request.

    uvicorn instantiates it with the keyword arguments it gives any protocol class; ``deadlines`` is
    set on the per-server subclass ``ReadDeadlines.protocol_class`` makes.
    """

    deadlines: "ReadDeadlines"

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.inner = H11Protocol(config=config, server_state=server_state, app_state=app_state, _loop=_loop)
        self.loop = _loop or asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self._timer: asyncio.TimerHandle | None = None

    # the deadline ---------------------------------------------------------------------------------
    def arm(self) -> None:
        """The next request must be read within the read timeout."""
        self.disarm()
        if self.transport is not None and not self.transport.is_closing():
            self._timer = self.loop.call_later(self.deadlines.limits.read_timeout_s, self._expired)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.deadlines.count_closed()
            log.debug("closing %s: no complete request within %.1fs", self.peer, self.deadlines.limits.read_timeout_s)
            self.transport.close()

    # asyncio.Protocol, forwarded -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = peer_of(transport)
        self.deadlines.add(self)
        self.arm()
        self.inner.connection_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.deadlines.discard(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ReadDeadlines:
    """The connections of one server by peer address, and the ASGI middleware that paces their deadlines."""

    def __init__(self, limits: ConnectionLimits, stats: Any = None) -> None:
        self.limits = limits
        self.stats = stats  # the gateway's /v1/stats counters, when given
        self._open: dict[Peer, ReadDeadlineProtocol] = {}
        self.closed_slow = 0  # connections closed for not sending a request in time

    def count_closed(self) -> None:
        self.closed_slow += 1
        if self.stats is not None:
            self.stats.incr("connections.closed_slow")

    def protocol_class(self) -> type[asyncio.Protocol]:
        return type("GatewayHTTPProtocol", (ReadDeadlineProtocol,), {"deadlines": self})

    def add(self, conn: ReadDeadlineProtocol) -> None:
        if conn.peer is not None:
            self._open[conn.peer] = conn

    def discard(self, conn: ReadDeadlineProtocol) -> None:
        if conn.peer is not None and self._open.get(conn.peer) is conn:
            del self._open[conn.peer]

    def open_connections(self) -> int:
        return len(self._open)

    def _conn(self, scope: dict[str, Any]) -> ReadDeadlineProtocol | None:
        client = scope.get("client")
        return self._open.get((str(client[0]), int(client[1]))) if client else None

    def middleware(self, app: Any) -> Any:
        """Wrap the ASGI app: the deadline stops once the request is read or answered, restarts after the response."""

        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            conn = self._conn(scope) if scope["type"] == "http" else None
            if conn is None:
                await app(scope, receive, send)
                return
            if not _has_body(scope):
                conn.disarm()

            async def receive_tracked() -> dict[str, Any]:
                message = await receive()
                if message["type"] == "http.request" and not message.get("more_body", False):
                    conn.disarm()
                return message

            async def send_tracked(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    conn.disarm()
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    conn.arm()  # waiting for the next request on this keep-alive connection

            await app(scope, receive_tracked, send_tracked)

        return guarded


def _has_body(scope: dict[str, Any]) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
    return False


def uvicorn_config(app: Any, settings: Any, host: str, port: int, *, stats: Any = None,
                   **options: Any) -> tuple[uvicorn.Config, ReadDeadlines]:
    """The gateway's uvicorn configuration (the app behind the read deadlines, the limits set) and its deadlines.

    ``stats``: the gateway's counters (``app.state.gateway.stats``); closed slow connections show at /v1/stats.
    """
    limits = ConnectionLimits.from_settings(settings)
    deadlines = ReadDeadlines(limits, stats)
    config = uvicorn.Config(
        deadlines.middleware(app),
        host=host,
        port=port,
        http=deadlines.protocol_class(),
        ws="none",  # no WebSocket routes: an Upgrade request is plain HTTP (and keeps its deadline logic)
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]  # used as a float by call_later
        limit_concurrency=limits.max_connections or None,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        proxy_headers=False,  # the deadlines find a connection by its peer address
        server_header=False,
        **options,
    )
    return config, deadlines
