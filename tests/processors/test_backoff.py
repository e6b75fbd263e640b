"""retry_transient: backoff growth, jitter bounds, deadline, non-transient errors (no services)."""

from __future__ import annotations

import pytest
import redis.exceptions

from processors.backoff import RetryDeadlineExceeded, is_transient_redis_error, retry_transient


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(times: int, exc: Exception):
    calls = {"n": 0}

    async def fn():
        calls["n"] += 1
        if calls["n"] <= times:
            raise exc
        return "ok"

    return fn, calls


async def test_a_servers_retry_after_hint_is_the_wait():
    class RateLimited(Exception):
        transient, retry_after = True, 1.5

    t = FakeTime()
    fn, calls = failing(2, RateLimited())
    assert await retry_transient(fn, base_s=0.01, max_s=0.02, deadline_s=60, sleep=t.sleep, clock=t.clock) == "ok"
    assert t.sleeps == [1.5, 1.5] and calls["n"] == 3
    t2 = FakeTime()
    fn, _ = failing(5, RateLimited())
    with pytest.raises(RetryDeadlineExceeded):
        await retry_transient(fn, base_s=0.01, max_s=0.02, deadline_s=2.0, sleep=t2.sleep, clock=t2.clock)
    assert t2.sleeps == [1.5, 0.5]  # never past the deadline


async def test_retries_until_success_with_bounded_jittered_sleeps():
    t = FakeTime()
    fn, calls = failing(6, redis.exceptions.ConnectionError("down"))
    result = await retry_transient(fn, is_transient=is_transient_redis_error, base_s=0.1, max_s=0.5,
                                   deadline_s=60, sleep=t.sleep, clock=t.clock)
    assert result == "ok" and calls["n"] == 7
    caps = [min(0.5, 0.1 * 2**i) for i in range(6)]
    assert all(0 <= s <= cap for s, cap in zip(t.sleeps, caps))


async def test_raises_after_deadline_from_last_error():
    t = FakeTime()
    fn, calls = failing(10**6, redis.exceptions.TimeoutError("slow"))
    with pytest.raises(RetryDeadlineExceeded) as info:
        await retry_transient(fn, is_transient=is_transient_redis_error, base_s=0.5, max_s=2.0,
                              deadline_s=10, sleep=t.sleep, clock=t.clock)
    assert isinstance(info.value.__cause__, redis.exceptions.TimeoutError)
    assert 10 <= t.now <= 10 + 1e-9 and calls["n"] > 5


async def test_non_transient_error_is_not_retried():
    t = FakeTime()
    fn, calls = failing(1, redis.exceptions.ResponseError("WRONGTYPE"))
    with pytest.raises(redis.exceptions.ResponseError):
        await retry_transient(fn, is_transient=is_transient_redis_error, sleep=t.sleep, clock=t.clock)
    assert calls["n"] == 1 and t.sleeps == []


def test_redis_error_classification():
    assert is_transient_redis_error(redis.exceptions.ConnectionError())
    assert is_transient_redis_error(redis.exceptions.BusyLoadingError())
    assert is_transient_redis_error(ConnectionRefusedError())
    assert not is_transient_redis_error(redis.exceptions.AuthenticationError())
    assert not is_transient_redis_error(redis.exceptions.ResponseError())
    assert not is_transient_redis_error(ValueError())


async def test_rejects_bad_arguments():
    async def fn():
        return 1

    with pytest.raises(ValueError):
        await retry_transient(fn, is_transient=lambda e: True, base_s=0)


async def test_waits_out_an_outage_of_any_length_and_reports_each_retry():
    import math

    t = FakeTime()
    fn, calls = failing(1200, ConnectionError("down"))  # past 2**1024: the exponent must be capped
    seen: list[tuple[int, float]] = []
    result = await retry_transient(fn, is_transient=lambda e: True, base_s=0.1, max_s=0.5, deadline_s=math.inf,
                                   sleep=t.sleep, clock=t.clock, on_retry=lambda n, exc, d: seen.append((n, d)))
    assert result == "ok" and calls["n"] == 1201
    assert [n for n, _ in seen] == list(range(1, 1201))
    assert all(0.0 <= d <= 0.5 for _, d in seen) and [d for _, d in seen] == t.sleeps


async def test_success_at_once_is_one_call_without_sleeps_or_retry_reports():
    t = FakeTime()
    fn, calls = failing(0, ConnectionError("never raised"))
    seen: list[int] = []
    result = await retry_transient(fn, is_transient=lambda e: True, sleep=t.sleep, clock=t.clock,
                                   on_retry=lambda n, exc, d: seen.append(n))
    assert result == "ok" and calls["n"] == 1 and t.sleeps == [] and seen == []


async def test_the_first_failure_outside_the_retry_loop_is_still_attempt_one():
    t = FakeTime()
    error = ConnectionError("blip")
    fn, calls = failing(2, error)
    seen: list[tuple[int, BaseException]] = []
    result = await retry_transient(fn, is_transient=lambda e: True, base_s=0.1, max_s=0.5, sleep=t.sleep,
                                   clock=t.clock, on_retry=lambda n, exc, d: seen.append((n, exc)))
    assert result == "ok" and calls["n"] == 3 and len(t.sleeps) == 2
    assert seen == [(1, error), (2, error)]


async def test_the_deadline_counts_from_before_the_first_attempt():
    t = FakeTime()
    calls = {"n": 0}

    async def slow_then_down():
        calls["n"] += 1
        t.now += 5.0  # the first attempt alone outlasts the deadline
        raise ConnectionError("down")

    with pytest.raises(RetryDeadlineExceeded) as info:
        await retry_transient(slow_then_down, is_transient=lambda e: True, deadline_s=3, sleep=t.sleep, clock=t.clock)
    assert calls["n"] == 1 and t.sleeps == [] and isinstance(info.value.__cause__, ConnectionError)
    assert "1 attempts" in str(info.value)
