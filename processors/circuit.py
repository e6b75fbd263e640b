"""A circuit breaker shared by every integration that can fail for a while (LLM providers, the
knowledge base): after N consecutive failures stop calling, after ``reset_s`` let one probe through,
close again on its success (a call let through before the circuit opened does not close it: the
failures that opened it are newer). Failing fast is what keeps a slow dependency from filling the in-flight
window with doomed calls.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


class CircuitState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Permit:
    """One call let through (always true); ``probe`` numbers the half-open circuit's one trial call
    (0: an ordinary call). Handed back to ``release``, it says whether that call was the probe, so a
    cancelled ordinary call cannot let a second probe out beside the one still waiting."""

    probe: int = 0


_ORDINARY = Permit()  # every call let through a closed circuit: one object, not one per call


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> half-open after ``reset_s`` -> closed on success."""

    def __init__(
        self, *, failure_threshold: int = 5, reset_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_s < 0:
            raise ValueError("reset_s must not be negative")
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._probes = 0  # probes let through so far: a permit names its own
        self.times_opened = 0
        self._on_open: list[Callable[[], None]] = []

    @property
    def state(self) -> CircuitState:
        with self._lock:
            self._maybe_half_open()
            return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        with self._lock:
            if self._state is not CircuitState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.reset_s - self._clock())

    def allow(self) -> Permit | None:
        """May a call go out now? A permit if so (keep it for ``release``), None if not. In half-open
        state only one probe at a time is allowed."""
        with self._lock:
            self._maybe_half_open()
            if self._state is CircuitState.CLOSED:
                return _ORDINARY
            if self._state is CircuitState.HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                self._probes += 1
                return Permit(probe=self._probes)
            return None

    def record_success(self) -> None:
        with self._lock:
            self._maybe_half_open()
            if self._state is CircuitState.OPEN:
                # a call let through before the circuit opened: the failures that opened it are the
                # newer verdict (a lucky straggler of a hung provider must not send the next turns
                # back to wait on it); only a probe after ``reset_s`` closes it
                return
            if self._state is not CircuitState.CLOSED:
                log.info("circuit closed again after a successful call")
            self._state = CircuitState.CLOSED
            self._failures = 0
            self._probe_in_flight = False

    def subscribe_open(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever the circuit opens; returns the unsubscribe function.

        Why: calls already waiting on a provider when it is judged down should give up at once
        (and fall back) instead of each waiting out its own deadline. Callbacks run in the thread
        that recorded the failure, outside the lock; they must be quick and must not raise.
        """
        with self._lock:
            self._on_open.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                try:
                    self._on_open.remove(callback)
                except ValueError:
                    pass

        return unsubscribe

    def record_failure(self) -> None:
        opened_now = False
        with self._lock:
            self._failures += 1
            if self._state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
                if self._state is not CircuitState.OPEN:
                    self.times_opened += 1
                    opened_now = True
                    log.warning("circuit opened after %d consecutive failures", self._failures)
                self._state = CircuitState.OPEN
                self._opened_at = self._clock()
            self._probe_in_flight = False
            listeners = list(self._on_open) if opened_now else []
        for callback in listeners:
            try:
                callback()
            except Exception:  # a listener's bug must not break failure accounting
                log.exception("circuit open listener failed")

    def release(self, permit: Permit) -> None:
        """A call that was allowed ended without a verdict (cancelled, or an error that says nothing
        about the dependency): if it was the probe still out, let another probe try."""
        with self._lock:
            if permit.probe and permit.probe == self._probes:
                self._probe_in_flight = False

    def _maybe_half_open(self) -> None:
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            self._state = CircuitState.HALF_OPEN
            self._probe_in_flight = False
