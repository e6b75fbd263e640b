"""State shared by the gateway's channel handlers, and the guard every route goes through."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from connectors.gateway.limits import BodyTooLarge, ExpiringSet, TokenBuckets, read_body
from connectors.gateway.publish import Publisher, Unavailable
from connectors.gateway.sse import Hub
from connectors.gateway.stats import Stats
from streams.config import Settings, secret

log = logging.getLogger("chatstream.gateway")

Handler = Callable[["Gateway", Request, bytes], Awaitable[Response]]


def error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


@dataclass
class Gateway:
    settings: Settings
    publisher: Publisher
    stats: Stats = field(default_factory=Stats)
    hub: Hub | None = None
    redis: Any = None  # redis.asyncio client (Slack reaction -> message_id lookups), optional
    ip_buckets: TokenBuckets | None = None
    tenant_buckets: TokenBuckets | None = None
    stream_key: bytes = b""
    seen: ExpiringSet | None = None  # channel event ids already published (Slack retries)
    inflight: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        self.ip_buckets = self.ip_buckets or TokenBuckets(s.gateway_ip_rate_per_minute)
        self.tenant_buckets = self.tenant_buckets or TokenBuckets(s.gateway_tenant_rate_per_minute)
        self.seen = self.seen or ExpiringSet(s.gateway_dedup_ttl_s)
        configured = secret(s.gateway_stream_secret)
        self.stream_key = configured.encode() if configured else secrets.token_bytes(32)

    # --- SSE stream tokens: a browser may read the replies of the sessions it was handed -----------
    def stream_token(self, session_id: str) -> str:
        return hmac.new(self.stream_key, session_id.encode(), hashlib.sha256).hexdigest()

    def stream_token_ok(self, session_id: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.stream_token(session_id), token or "")

    def tenant_limited(self, channel: str, tenant: str, peer: str | None) -> Response | None:
        assert self.tenant_buckets is not None
        wait = self.tenant_buckets.take(f"{channel}:{tenant}")
        if wait > 0:
            self.stats.refuse(channel, "tenant_rate_limited", 429, peer, f"tenant={tenant}")
            return error(429, "rate limited", {"Retry-After": str(max(1, int(wait + 0.999)))})
        return None

    def guard(self, channel: str, handler: Handler, *, body: bool = True) -> Callable[[Request], Awaitable[Response]]:
        """Per-IP rate limit, body size limit, and 503 when Kafka cannot take the record."""

        async def endpoint(request: Request) -> Response:
            peer = request.client.host if request.client else None
            assert self.ip_buckets is not None
            wait = self.ip_buckets.take(peer or "?")
            if wait > 0:
                self.stats.refuse(channel, "ip_rate_limited", 429, peer)
                return error(429, "rate limited", {"Retry-After": str(max(1, int(wait + 0.999)))})
            raw = b""
            if body:
                try:
                    raw = await read_body(request, self.settings.gateway_max_body_bytes)
                except BodyTooLarge as exc:
                    self.stats.refuse(channel, "too_large", 413, peer, str(exc))
                    return error(413, "request body too large")
                except ClientDisconnect:  # gone mid-body, or closed for sending it too slowly: nobody to answer
                    self.stats.refuse(channel, "body_incomplete", 408, peer)
                    return error(408, "request body incomplete")
            try:
                return await handler(self, request, raw)
            except Unavailable as exc:
                self.stats.incr(f"unavailable.{channel}")
                log.error("%s request not accepted, Kafka unavailable: %s", channel, exc)
                return error(503, "temporarily unavailable, retry", {"Retry-After": "5"})

        return endpoint
