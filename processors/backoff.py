"""Retry a transient failure with exponential backoff and full jitter, up to a deadline.

Why this exists: Redis (sessions, rate limits, idempotency) is on the path of every turn. When it is
down, the enrich stage has two choices: degrade (answer without history, skip the rate limit and the
duplicate check) or wait. Degrading would break the exactly-one-reply promise, because the
idempotency markers live in Redis; so the stage *waits*: the caller (the stage runner) retries the
Redis call with backoff, the call blocks the task, the bounded in-flight window fills up and the
agent stops pulling from Kafka. Consumption pauses instead of crash-looping, and nothing is dead-lettered:
a good turn is never the thing that is broken. When Redis is back the waiting calls succeed and the
backlog drains. Only after ``deadline_s`` does the error propagate, so a permanent outage still
becomes visible (the runner decides whether to restart the stage or keep waiting).

Full jitter (a random sleep in ``[0, min(max, base * 2**attempt)]``) keeps many waiting tasks from
hammering a recovering server in lockstep.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class RetryDeadlineExceeded(Exception):
    """A transient failure outlasted the deadline; ``__cause__`` is the last error."""


async def retry_transient(
    fn: Callable[[], Awaitable[T]],
    *,
    is_transient: Callable[[BaseException], bool],
    base_s: float = 0.05,
    max_s: float = 2.0,
    deadline_s: float = 60.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Await ``fn()`` until it succeeds, retrying errors that ``is_transient`` accepts.

    A non-transient error propagates at once (that is a bug or bad input, not an outage). After
    ``deadline_s`` of transient failures ``RetryDeadlineExceeded`` is raised from the last error;
    ``math.inf`` waits for as long as the outage lasts. ``on_retry(attempt, error, delay)`` replaces
    the default warning log (callers add span events and metrics there). ``sleep`` and ``clock`` are
    injectable so tests need not wait.
    """
    if base_s <= 0 or max_s <= 0 or deadline_s < 0:
        raise ValueError("base_s and max_s must be > 0 and deadline_s >= 0")
    started = clock()
    attempt = 0
    while True:
        try:
            return await fn()
        except Exception as exc:  # noqa: BLE001 - classified just below
            if not is_transient(exc):
                raise
            elapsed = clock() - started
            remaining = deadline_s - elapsed
            if remaining <= 0:
                raise RetryDeadlineExceeded(
                    f"still failing after {elapsed:.1f}s and {attempt + 1} attempts: {exc!r}"
                ) from exc
            # the exponent is capped: an outage of unbounded length must not overflow the float
            delay = min(remaining, random.uniform(0.0, min(max_s, base_s * (2 ** min(attempt, 30)))))
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            elif attempt == 1 or attempt % 10 == 1:
                log.warning("transient failure (attempt %d), retrying: %r", attempt, exc)
            await sleep(delay)


def is_transient_redis_error(exc: BaseException) -> bool:
    """Connection-level Redis trouble (down, restarting, timing out, still loading its data)."""
    import redis.exceptions as rexc

    return isinstance(
        exc,
        (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, ConnectionError, TimeoutError, OSError),
    ) and not isinstance(exc, rexc.AuthenticationError)
