"""The circuit breaker's verdicts (``processors.circuit``): what opens it, and what may close it."""

from __future__ import annotations

from processors.circuit import CircuitBreaker, CircuitState


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_call_let_through_before_the_circuit_opened_does_not_close_it() -> None:
    """A hung provider's lucky straggler must not send the next turns back to wait on it: only a probe
    after ``reset_s`` closes the circuit."""
    clock = _Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_s=10, clock=clock)
    assert breaker.allow()  # the straggler: let through while closed, answers late
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is CircuitState.OPEN and breaker.times_opened == 1
    clock.now = 4
    breaker.record_success()  # the straggler's answer
    assert breaker.state is CircuitState.OPEN and not breaker.allow()
    assert breaker.retry_in() == 6
    clock.now = 10
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.consecutive_failures == 0
    assert breaker.allow()


def test_a_success_after_the_reset_time_closes_it_even_before_anyone_asked() -> None:
    """Past ``reset_s`` the circuit is half-open whether or not ``allow`` was called since: a success
    then is a verdict on a provider given its time to recover."""
    clock = _Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_s=5, clock=clock)
    breaker.record_failure()
    clock.now = 5
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED


def test_breaker_state_machine_with_a_fake_clock():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, reset_s=10, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED
    breaker.record_success()  # a success resets the consecutive count
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is CircuitState.OPEN and not breaker.allow()
    assert breaker.retry_in() == 10
    now[0] = 10.0
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # nobody else while it runs
    breaker.record_failure()  # probe failed: open again for another reset period
    assert breaker.state is CircuitState.OPEN and not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow() and breaker.times_opened == 2


def test_a_cancelled_ordinary_call_does_not_let_a_second_probe_out() -> None:
    """``release`` gives back the probe's slot only for the probe itself: a call let through while the
    circuit was closed and cancelled while a probe is out says nothing, and frees nothing."""
    clock = _Clock()
    breaker = CircuitBreaker(failure_threshold=1, reset_s=5, clock=clock)
    ordinary = breaker.allow()
    assert ordinary and not ordinary.probe
    breaker.record_failure()
    clock.now = 5
    probe = breaker.allow()
    assert probe and probe.probe
    breaker.release(ordinary)  # the old call is cancelled while the probe still waits
    assert not breaker.allow()  # still one probe at a time
    breaker.release(probe)  # the probe is cancelled: no verdict, another may try
    second = breaker.allow()
    assert second and second.probe != probe.probe
    breaker.record_failure()  # the second probe fails: open again
    clock.now = 10
    third = breaker.allow()
    assert third
    breaker.release(second)  # a stale permit of an earlier half-open period frees nothing either
    assert not breaker.allow()
