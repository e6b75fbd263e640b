"""Retry policy, circuit breaker and per-attempt spans, against the scripted server."""

import random
import time

import pytest
from genhelpers import REFUND_PASSAGES
from opentelemetry.trace import StatusCode

from processors.generation.openai_provider import OpenAIProvider
from processors.generation.prompt import build_prompt
from processors.generation.provider import CircuitOpenError, PermanentError, RetryableError
from processors.generation.resilience import CircuitBreaker, CircuitState, ResilientProvider, RetryPolicy

PROMPT = build_prompt(system_prompt="sys", question="refunds?", passages=REFUND_PASSAGES, budget_tokens=3000)


def resilient(server, *, tracer=None, timeout_s=5.0, policy=None, breaker=None):
    inner = OpenAIProvider(base_url=server.base_url, api_key="k", model="test-model", timeout_s=timeout_s)
    return ResilientProvider(
        inner,
        policy=policy or RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.05),
        breaker=breaker or CircuitBreaker(failure_threshold=5, reset_s=0.3),
        tracer=tracer,
    )


async def call(provider):
    return await provider.complete(PROMPT.messages, max_tokens=100, passages=PROMPT.passages)


# --- policy and breaker alone -------------------------------------------------------------------


def test_backoff_is_full_jitter_and_bounded():
    policy = RetryPolicy(base_s=0.1, max_backoff_s=1.0, rng=random.Random(7))
    for retry in range(8):
        ceiling = min(1.0, 0.1 * 2**retry)
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2  # spread over the whole range


def test_retry_after_is_honoured_and_capped():
    policy = RetryPolicy(max_retry_after_s=5.0)
    assert policy.delay(0, retry_after=2.5) == 2.5
    assert policy.delay(3, retry_after=120) == 5.0


def test_bad_policy_values_are_refused():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)


# --- against the scripted server ---------------------------------------------------------------


async def test_429_with_retry_after_is_honoured_then_succeeds(llm, spans):
    tracer, exporter = spans
    llm.script(fail_next=[{"status": 429, "retry_after": 0.6}])
    provider = resilient(llm, tracer=tracer)
    started = time.monotonic()
    completion = await call(provider)
    assert time.monotonic() - started >= 0.6  # waited as told, not the 10 ms backoff
    assert "[billing-refunds]" in completion.text
    assert llm.stats()["by_outcome"] == {"429": 1, "ok": 1}
    first, second = exporter.get_finished_spans()
    assert first.name == second.name == "chat test-model"
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes["error.type"] == "429" and first.attributes["chatstream.llm.retry_after_s"] == 0.6
    assert any(e.name == "exception" for e in first.events)
    assert second.status.status_code is not StatusCode.ERROR
    assert second.attributes["gen_ai.system"] == "openai"
    assert second.attributes["gen_ai.request.model"] == "test-model"
    assert second.attributes["gen_ai.response.model"] == "test-model"
    assert second.attributes["gen_ai.usage.input_tokens"] == completion.prompt_tokens > 0
    assert second.attributes["gen_ai.usage.output_tokens"] == completion.completion_tokens > 0
    assert second.attributes["chatstream.llm.attempt"] == 2


async def test_retry_after_beyond_the_cap_waits_only_the_cap(llm):
    llm.script(fail_next=[{"status": 429, "retry_after": 60}])
    provider = resilient(llm, policy=RetryPolicy(max_attempts=2, max_retry_after_s=0.2))
    started = time.monotonic()
    await call(provider)
    assert time.monotonic() - started < 2


async def test_500s_are_retried_then_succeed(llm):
    llm.script(fail_next=[{"status": 500}, {"status": 503}])
    completion = await call(resilient(llm))
    assert completion.text
    assert llm.stats()["by_outcome"] == {"500": 1, "503": 1, "ok": 1}


async def test_timeout_is_retried(llm):
    llm.script(fail_next=[{"hang": True}])
    completion = await call(resilient(llm, timeout_s=0.3))
    assert completion.text
    assert llm.stats()["by_outcome"] == {"hang": 1, "ok": 1}


async def test_retries_are_bounded(llm, spans):
    tracer, exporter = spans
    llm.script(mode="500")
    with pytest.raises(RetryableError):
        await call(resilient(llm, tracer=tracer))
    assert llm.stats()["by_outcome"] == {"500": 3}
    assert len(exporter.get_finished_spans()) == 3


async def test_permanent_errors_are_not_retried(llm):
    llm.script(fail_next=[{"status": 401}])
    with pytest.raises(PermanentError):
        await call(resilient(llm))
    assert llm.stats()["by_outcome"] == {"401": 1}


async def test_the_deadline_bounds_the_whole_call(llm):
    llm.script(mode="hang")
    provider = resilient(llm, timeout_s=10, policy=RetryPolicy(max_attempts=5, base_s=0.01, deadline_s=0.5))
    started = time.monotonic()
    with pytest.raises(RetryableError, match="deadline"):
        await call(provider)
    assert time.monotonic() - started < 1.5


async def test_circuit_opens_after_n_failures_then_half_opens_and_closes_on_recovery(llm):
    breaker = CircuitBreaker(failure_threshold=3, reset_s=0.4)
    provider = resilient(llm, policy=RetryPolicy(max_attempts=1), breaker=breaker)
    llm.script(mode="500")
    for _ in range(3):
        with pytest.raises(RetryableError):
            await call(provider)
    assert breaker.state is CircuitState.OPEN
    # Open: fails fast without touching the server.
    with pytest.raises(CircuitOpenError):
        await call(provider)
    assert llm.stats()["by_outcome"] == {"500": 3}
    # Still failing when the probe goes out: open again.
    time.sleep(0.45)
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(RetryableError):
        await call(provider)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await call(provider)
    # The provider recovers; after reset_s the probe succeeds and the circuit closes.
    llm.script(mode="ok")
    time.sleep(0.45)
    completion = await call(provider)
    assert completion.text and breaker.state is CircuitState.CLOSED
    assert llm.stats()["by_outcome"] == {"500": 4, "ok": 1}


async def test_an_open_circuit_stops_retrying_at_once(llm):
    breaker = CircuitBreaker(failure_threshold=2, reset_s=30)
    provider = resilient(llm, policy=RetryPolicy(max_attempts=5, base_s=0.01), breaker=breaker)
    llm.script(mode="500")
    with pytest.raises(RetryableError):
        await call(provider)
    assert llm.stats()["by_outcome"] == {"500": 2}  # not 5: the breaker opened after 2


async def test_bad_requests_do_not_open_the_circuit(llm):
    breaker = CircuitBreaker(failure_threshold=2, reset_s=30)
    provider = resilient(llm, breaker=breaker)
    llm.script(fail_next=[{"status": 400}, {"status": 400}, {"status": 400}])
    for _ in range(3):
        with pytest.raises(PermanentError):
            await call(provider)
    assert breaker.state is CircuitState.CLOSED


class _Broken:
    name = "broken"
    model = "broken-model"

    async def complete(self, messages, *, max_tokens, passages):
        raise KeyError("choices")


async def test_an_unexpected_provider_exception_becomes_a_provider_error(spans):
    tracer, exporter = spans
    breaker = CircuitBreaker(failure_threshold=1, reset_s=30)
    provider = ResilientProvider(_Broken(), policy=RetryPolicy(max_attempts=3), breaker=breaker, tracer=tracer)
    with pytest.raises(PermanentError, match="unexpected KeyError") as info:
        await call(provider)
    assert isinstance(info.value.__cause__, KeyError)
    assert breaker.state is CircuitState.OPEN
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and span.attributes["error.type"] == "KeyError"


async def test_cancellation_releases_a_half_open_probe(llm):
    import asyncio

    breaker = CircuitBreaker(failure_threshold=1, reset_s=0.0)
    breaker.record_failure()  # open, and with reset 0 the next allow() is the half-open probe
    llm.script(mode="hang")
    provider = resilient(llm, breaker=breaker)
    task = asyncio.create_task(call(provider))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.allow()  # the cancelled probe gave its slot back
