"""Request limits: body size and in-memory token buckets per IP and per tenant.

In memory on purpose: the limits protect this process (and Kafka behind it) from floods; the
per-user conversational rate limit that must hold across instances lives in the pipeline (Redis).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit (answered with 413)."""


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing early on Content-Length and while streaming (no trust in the header)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise BodyTooLarge(f"content-length {declared} > {max_bytes}")
        except ValueError:
            raise BodyTooLarge("invalid content-length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class TokenBuckets:
    """One token bucket per key; ``take`` answers 0 when allowed or the seconds to wait."""

    def __init__(
        self,
        rate_per_minute: float,
        burst: float | None = None,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be > 0")
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1.0, rate_per_minute / 6.0))
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, cost: float = 1.0) -> float:
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (cost - tokens) / self.rate
        while len(self._buckets) > self.max_keys:  # bounded memory under a spoofed-key flood
            self._buckets.popitem(last=False)
        return wait


class AsyncRateLimiter:
    """A single token bucket that makes the caller wait (used by deliver per channel)."""

    def __init__(self, rate_per_s: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._buckets = TokenBuckets(rate_per_s * 60.0, burst if burst is not None else max(1.0, rate_per_s), clock=clock)

    async def acquire(self) -> None:
        import asyncio

        while True:
            wait = self._buckets.take("_")
            if wait <= 0:
                return
            await asyncio.sleep(wait)


class ExpiringSet:
    """Keys remembered for ``ttl_s`` seconds (Slack retries, replayed signatures)."""

    def __init__(self, ttl_s: float, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.clock = clock
        self._items: OrderedDict[str, float] = OrderedDict()

    def _expire(self) -> None:
        now = self.clock()
        while self._items:
            key, expires = next(iter(self._items.items()))
            if expires > now and len(self._items) <= self.max_keys:
                break
            self._items.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        self._expire()
        return key in self._items

    def add(self, key: str) -> None:
        self._expire()
        self._items.pop(key, None)
        self._items[key] = self.clock() + self.ttl_s
