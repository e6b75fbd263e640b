"""Bounded retries and a circuit breaker around one provider, one span per attempt.

Why our own and not the SDK's: the breaker has to see every attempt (an SDK retrying inside one
call hides three failures behind one), the Retry-After hint must be capped so one 429 cannot park
a turn for minutes, and every attempt should be its own ``chat {model}`` span so a trace shows what
the provider did to the turn (GenAI semantic conventions: gen_ai.system, gen_ai.request.model,
gen_ai.response.model, gen_ai.usage.*).

The breaker is per provider and shared by all turns in flight: after ``failure_threshold``
consecutive failed attempts it opens and calls fail fast (the generator answers extractively,
status FALLBACK); after ``reset_s`` one probe call is let through (half-open); its success closes
the circuit, its failure opens it again for another ``reset_s``. All state changes happen between
awaits, so it is consistent under asyncio; a lock makes it safe from other threads as well.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from processors.circuit import CircuitBreaker, CircuitState, Permit  # noqa: F401 (re-exported)
from processors.generation.deadline import TurnDeadline
from processors.generation.provider import (
    CircuitOpenError,
    Completion,
    DeltaSink,
    FirstTokenTimeout,
    LLMProvider,
    PermanentError,
    ProviderError,
    RetryableError,
    StreamBroken,
    complete_streaming,
)
from processors.records import Passage
from processors.spans import active_span

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("chatstream.generation")

# A 400/413/422 says our request was bad, not that the provider is unhealthy.
_REQUEST_FAULT_STATUSES = frozenset({400, 413, 422})


class RetryPolicy:
    """How often and how long to retry one call.

    ``max_attempts`` counts the first try. Without a hint the wait before retry ``n`` (0-based) is
    uniform in ``[0, min(max_backoff_s, base_s * 2**n)]`` (full jitter: concurrent turns do not
    retry in lockstep). A server's Retry-After is honoured as given, capped at ``max_retry_after_s``.
    ``deadline_s`` bounds the whole call including waits: no retry starts that could not finish.
    """

    def __init__(
        self,
        *,
        max_attempts: int = 3,
        base_s: float = 0.2,
        max_backoff_s: float = 5.0,
        max_retry_after_s: float = 10.0,
        deadline_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if base_s < 0 or max_backoff_s < 0 or max_retry_after_s < 0:
            raise ValueError("backoff values must not be negative")
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.max_attempts = max_attempts
        self.base_s = base_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.deadline_s = deadline_s
        self._rng = rng or random.Random()

    def delay(self, retry_index: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry_index`` (0 for the first retry)."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_retry_after_s)
        ceiling = min(self.max_backoff_s, self.base_s * (2**retry_index))
        return self._rng.uniform(0.0, ceiling)


class ResilientProvider:
    """A provider wrapped in its retry policy and circuit breaker; itself an ``LLMProvider``."""

    def __init__(
        self,
        provider: LLMProvider,
        *,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        tracer: trace.Tracer | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self.model = getattr(provider, "model", "unknown")
        self.system = getattr(provider, "system", provider.name)
        self.policy = policy or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self._tracer = tracer or _tracer
        self._sleep = sleep
        self._clock = clock

    def _attempt_failed(self, exc: ProviderError, span, permit: Permit) -> None:  # type: ignore[no-untyped-def]
        """One attempt's verdict on the circuit and its span (streamed or not, the same rules)."""
        if _counts_against_circuit(exc):
            self.breaker.record_failure()
        else:
            self.breaker.release(permit)
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        span.set_attribute("error.type", _error_type(exc))
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            span.set_attribute("chatstream.llm.retry_after_s", exc.retry_after)

    async def complete(self, messages: list[dict], *, max_tokens: int, passages: list[Passage]) -> Completion:
        started = self._clock()
        deadline = None if self.policy.deadline_s is None else started + self.policy.deadline_s
        attempt = 0
        while True:
            permit = self.breaker.allow()
            if not permit:
                raise CircuitOpenError(
                    f"circuit open, next probe in {self.breaker.retry_in():.1f}s", provider=self.name
                )
            try:
                return await self._attempt(messages, max_tokens, passages, attempt, deadline, permit)
            except RetryableError as exc:
                attempt += 1
                if attempt >= self.policy.max_attempts or self.breaker.state is CircuitState.OPEN:
                    raise
                wait = self.policy.delay(attempt - 1, exc.retry_after)
                if deadline is not None and self._clock() + wait >= deadline:
                    raise
                log.info("%s: attempt %d failed (%s), retrying in %.2fs", self.name, attempt, exc, wait)
                await self._sleep(wait)

    async def stream(
        self,
        messages: list[dict],
        *,
        max_tokens: int,
        passages: list[Passage],
        on_delta: DeltaSink,
        deadline: TurnDeadline | None = None,
    ) -> Completion:
        """Stream with retries inside the turn's ``deadline`` (see ``deadline``).

        Fast failures (429, 5xx, connection refused) are retried while no token was shown and the
        budget allows the wait. No first token within ``first_token_s`` of this provider's first
        attempt, or its circuit opening meanwhile, ends its part of the turn at once. A failure
        after text was shown raises ``StreamBroken``: nobody may continue that text.
        """
        if deadline is None:
            deadline = TurnDeadline(budget_s=self.policy.deadline_s or float("inf"), clock=self._clock)
        first_token_due = deadline.first_token_due(self._clock())
        attempt = 0
        while True:
            permit = self.breaker.allow()
            if not permit:
                raise CircuitOpenError(
                    f"circuit open, next probe in {self.breaker.retry_in():.1f}s", provider=self.name
                )
            try:
                return await self._stream_attempt(messages, max_tokens, passages, on_delta, attempt, deadline,
                                                  first_token_due, permit)
            except RetryableError as exc:
                attempt += 1
                if deadline.streaming:
                    raise StreamBroken(f"failed after the answer had started: {exc}", provider=self.name) from exc
                if (
                    isinstance(exc, FirstTokenTimeout)
                    or attempt >= self.policy.max_attempts
                    or self.breaker.state is CircuitState.OPEN
                ):
                    raise
                wait = self.policy.delay(attempt - 1, exc.retry_after)
                if not deadline.may_wait(wait) or self._clock() + wait >= first_token_due:
                    raise
                log.info("%s: attempt %d failed (%s), retrying in %.2fs", self.name, attempt, exc, wait)
                await self._sleep(wait)
            except PermanentError as exc:
                if deadline.streaming:
                    raise StreamBroken(f"failed after the answer had started: {exc}", provider=self.name) from exc
                raise

    async def _stream_attempt(
        self,
        messages: list[dict],
        max_tokens: int,
        passages: list[Passage],
        on_delta: DeltaSink,
        attempt: int,
        deadline: TurnDeadline,
        first_token_due: float,
        permit: Permit,
    ) -> Completion:
        loop = asyncio.get_running_loop()
        first = asyncio.Event()
        opened = asyncio.Event()
        last_token = [self._clock()]

        def relay(text: str) -> None:
            last_token[0] = self._clock()
            if not first.is_set():
                ttft = deadline.mark_first_token()
                span.set_attribute("gen_ai.response.time_to_first_token", ttft)
                first.set()
            on_delta(text)

        def circuit_opened() -> None:
            loop.call_soon_threadsafe(opened.set)

        with active_span(
            self._tracer,
            f"chat {self.model}",
            kind=SpanKind.CLIENT,
            attributes={**self._attributes(max_tokens, attempt), "gen_ai.request.stream": True},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            unsubscribe = self.breaker.subscribe_open(circuit_opened)
            call = asyncio.ensure_future(
                complete_streaming(self.provider, messages, max_tokens=max_tokens, passages=passages, on_delta=relay)
            )
            waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(opened.wait())]
            try:
                try:
                    await asyncio.wait(
                        [call, *waiters],
                        timeout=max(0.0, first_token_due - self._clock()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not call.done() and not first.is_set():
                        if opened.is_set():
                            raise CircuitOpenError("circuit opened while waiting for the first token",
                                                   provider=self.name)
                        raise FirstTokenTimeout(
                            f"no first token within {deadline.first_token_s:g}s", provider=self.name
                        )
                    while not call.done():  # streaming: only a stall ends it, never the budget
                        gap = last_token[0] + deadline.stall_s - self._clock()
                        if gap <= 0:
                            raise RetryableError(f"stream stalled for {deadline.stall_s:g}s", provider=self.name)
                        await asyncio.wait([call], timeout=gap)
                    completion = call.result()
                finally:
                    for task in (call, *waiters):
                        if not task.done():
                            task.cancel()
                    unsubscribe()
            except CircuitOpenError as exc:
                self.breaker.release(permit)  # no verdict on the provider from this turn
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute("error.type", "CircuitOpenError")
                raise
            except ProviderError as exc:
                self._attempt_failed(exc, span, permit)
                raise
            except asyncio.CancelledError:
                self.breaker.release(permit)
                raise
            except Exception as exc:
                raise self._unexpected(exc, span) from exc
            self.breaker.record_success()
            span.set_attributes(_usage(completion))
            return completion

    def _unexpected(self, exc: Exception, span) -> PermanentError:  # type: ignore[no-untyped-def]
        """Anything but a ProviderError (an SDK choking on an odd response, a provider bug) is a
        provider failure too: wrapped, failover and the fallback handle it like the rest."""
        self.breaker.record_failure()
        log.exception("%s: unexpected error from the provider", self.name)
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.set_attribute("error.type", type(exc).__name__)
        return PermanentError(f"unexpected {type(exc).__name__}: {exc}", provider=self.name)

    def _attributes(self, max_tokens: int, attempt: int) -> dict:
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": self.system,
            "gen_ai.provider.name": self.system,
            "gen_ai.request.model": self.model,
            "gen_ai.request.max_tokens": max_tokens,
            "chatstream.llm.provider": self.name,
            "chatstream.llm.attempt": attempt + 1,
        }

    async def _attempt(
        self, messages: list[dict], max_tokens: int, passages: list[Passage], attempt: int, deadline: float | None,
        permit: Permit,
    ) -> Completion:
        with active_span(
            self._tracer,
            f"chat {self.model}",
            kind=SpanKind.CLIENT,
            attributes=self._attributes(max_tokens, attempt),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                call = self.provider.complete(messages, max_tokens=max_tokens, passages=passages)
                if deadline is None:
                    completion = await call
                else:
                    remaining = deadline - self._clock()
                    try:
                        completion = await asyncio.wait_for(call, timeout=max(0.001, remaining))
                    except asyncio.TimeoutError:
                        raise RetryableError(
                            f"call deadline of {self.policy.deadline_s:g}s exceeded", provider=self.name
                        ) from None
            except ProviderError as exc:
                self._attempt_failed(exc, span, permit)
                raise
            except Exception as exc:
                raise self._unexpected(exc, span) from exc
            except BaseException:
                # Cancelled (the stage gave up on the turn): says nothing about the provider's health.
                self.breaker.release(permit)
                raise
            self.breaker.record_success()
            span.set_attributes(_usage(completion))
            return completion


def _usage(completion: Completion) -> dict[str, object]:
    """What the answer cost, on the ``chat`` span (one ``set_attributes``: one lock, one validation pass)."""
    return {
        "gen_ai.response.model": completion.model,
        "gen_ai.usage.input_tokens": completion.prompt_tokens,
        "gen_ai.usage.output_tokens": completion.completion_tokens,
    }


def _counts_against_circuit(exc: ProviderError) -> bool:
    return not (isinstance(exc, PermanentError) and exc.status in _REQUEST_FAULT_STATUSES)


def _error_type(exc: ProviderError) -> str:
    return str(exc.status) if exc.status is not None else type(exc).__name__
