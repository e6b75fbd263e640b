"""Which failures are worth waiting out.

A transient failure (a server down or slow) must never dead-letter a good turn: the stage retries
with backoff and stops pulling meanwhile. Anything else is a property of the record and goes to the
dead-letter topic at once.
"""

from __future__ import annotations

import asyncio

import redis.exceptions as redis_errors

_TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, OSError) and exc.errno is not None:
        return True  # refused/reset/unreachable sockets
    marker = getattr(exc, "transient", None)
    return bool(marker)
