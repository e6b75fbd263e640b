"""Retry a transient failure with exponential backoff and full jitter, up to a deadline.

Why this exists: Redis (sessions, rate limits, idempotency) is on the path of every turn. When it is
down, the enrich stage has two choices: degrade (answer without history, skip the rate limit and the
duplicate check) or wait. Degrading would break the exactly-one-reply promise, because the
idempotency markers live in Redis; so the stage *waits*: the caller (the stage runner) retries the
Redis call with backoff, the call blocks the task, the bounded in-flight window fills up, the stage's
backlog fills and the consumer pauses that stage's partitions. Consumption pauses instead of
crash-looping, and nothing is dead-lettered: a good turn is never the thing that is broken. When Redis is back the waiting calls succeed and the
backlog drains. Only after ``deadline_s`` does the error propagate, so a permanent outage still
becomes visible (the runner decides whether to restart the stage or keep waiting).

Full jitter (a random sleep in ``[0, min(max, base * 2**attempt)]``) keeps many waiting tasks from
hammering a recovering server in lockstep. An error that carries the server's own hint
(``retry_after`` in seconds, e.g. from a 429's Retry-After) waits that long instead.

This is the project's one retry vocabulary: ``retry_transient`` (tenacity underneath) and one
classifier, ``is_transient``. Stages raise; the stage runtime (``streams.stage.StageRunner``) retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions as redis_errors
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

T = TypeVar("T")

log = logging.getLogger(__name__)

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


def is_transient(exc: BaseException, *, auth_errors: bool = True) -> bool:
    """A server down, slow, restarting or still loading: worth waiting out, never a dead letter.

    Exceptions may mark themselves with ``transient = True`` (Kafka produce failures, a schema
    registry that cannot be reached). ``auth_errors=False`` treats a refused password as permanent
    (redis-py's ``AuthenticationError`` is a ``ConnectionError``): for callers with a deadline
    that should fail fast on a misconfiguration rather than wait it out.
    """
    if not auth_errors and isinstance(exc, redis_errors.AuthenticationError):
        return False
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, OSError):
        return True  # refused/reset/unreachable sockets
    return bool(getattr(exc, "transient", False))


def is_transient_redis_error(exc: BaseException) -> bool:
    """Connection-level Redis trouble (down, restarting, timing out, still loading its data)."""
    return is_transient(exc, auth_errors=False)


class RetryDeadlineExceeded(Exception):
    """A transient failure outlasted the deadline; ``__cause__`` is the last error."""


async def retry_transient(
    fn: Callable[[], Awaitable[T]],
    *,
    is_transient: Callable[[BaseException], bool] = is_transient,
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
    # Fast path: nearly every call succeeds at once, so the first attempt is a plain await and the
    # retry machinery (tenacity's state, the closures below) is built only after a first failure.
    try:
        return await fn()
    except Exception as exc:  # noqa: BLE001 - classified right here
        if not is_transient(exc):
            raise
        first_failure: BaseException | None = exc
    jitter = wait_random_exponential(multiplier=base_s, max=max_s)

    def remaining() -> float:
        return deadline_s - (clock() - started)

    def wait(state: RetryCallState) -> float:
        # full jitter (or the server's Retry-After hint), never past the deadline
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None)
        delay = float(hinted) if isinstance(hinted, (int, float)) else jitter(state)
        return max(0.0, min(remaining(), delay))

    def stop(state: RetryCallState) -> bool:
        return remaining() <= 0

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        if on_retry is not None:
            on_retry(state.attempt_number, exc, delay)
        elif state.attempt_number == 1 or state.attempt_number % 10 == 1:
            log.warning("transient failure (attempt %d), retrying: %r", state.attempt_number, exc)

    def give_up(state: RetryCallState) -> T:
        exc = state.outcome.exception() if state.outcome else None
        raise RetryDeadlineExceeded(
            f"still failing after {clock() - started:.1f}s and {state.attempt_number} attempts: {exc!r}"
        ) from exc

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait,
        stop=stop,
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )

    async def attempt() -> T:  # tenacity awaits only coroutine functions; ``fn`` may be a lambda
        nonlocal first_failure
        if first_failure is not None:  # attempt 1 already ran above: tenacity counts it, waits, retries
            failure, first_failure = first_failure, None
            raise failure
        return await fn()

    return await retrying(attempt)
