"""The Generator end to end against scripted servers: answers, failover, fallback, recovery."""

import time

from genhelpers import make_turn

from processors.generation.extractive import NO_ANSWER, ExtractiveProvider
from processors.generation.failover import FailoverProvider
from processors.generation.generator import RETRIEVAL_DOWN, Generator, build_generator
from processors.generation.openai_provider import OpenAIProvider
from processors.generation.resilience import CircuitBreaker, CircuitState, RetryPolicy
from streams.config import Settings

SYSTEM = "You are the support assistant. Answer only from the passages."


def llm_generator(*servers, threshold=3, reset_s=60.0, timeout_s=1.0):
    providers = [
        OpenAIProvider(base_url=s.base_url, api_key="k", model=f"model-{i}", timeout_s=timeout_s, name=f"llm-{i}")
        for i, s in enumerate(servers)
    ]
    chain = FailoverProvider(
        providers,
        policy_factory=lambda: RetryPolicy(max_attempts=2, base_s=0.01, max_backoff_s=0.02),
        breaker_factory=lambda: CircuitBreaker(failure_threshold=threshold, reset_s=reset_s),
    )
    return Generator(chain, ExtractiveProvider(), system_prompt=SYSTEM, prompt_token_budget=2000, max_answer_tokens=300)


async def test_llm_answer_fills_the_turn(llm, turn):
    out = await llm_generator(llm).generate(turn)
    assert out is not turn and turn.answer is None  # the input turn is left alone
    assert "14 days" in out.answer and "[billing-refunds]" in out.answer
    assert (out.provider, out.model, out.degraded, out.generation_error) == ("llm-0", "model-0", False, None)
    assert out.prompt_tokens > 0 and out.completion_tokens > 0 and out.llm_latency_ms >= 0


async def test_the_llm_sees_history_summary_and_passages(llm):
    llm.script(latency_ms=0)
    turn = make_turn("And for monthly plans?", summary="User asked about refunds.")
    out = await llm_generator(llm).generate(turn)
    assert out.answer  # grounded answer from the prompt the server received
    assert "[billing-refunds]" in out.answer


async def test_extractive_only_is_not_degraded(turn):
    fallback = ExtractiveProvider()
    out = await Generator(fallback, fallback, system_prompt=SYSTEM).generate(turn)
    assert out.provider == "extractive" and not out.degraded and out.generation_error is None
    assert "[billing-refunds]" in out.answer


async def test_fallback_answers_degraded_when_the_llm_fails(llm, turn):
    llm.script(mode="500")
    out = await llm_generator(llm).generate(turn)
    assert out.degraded and out.provider == "extractive" and out.model == "extractive"
    assert "AllProvidersFailedError" in out.generation_error and "500" in out.generation_error
    assert "[billing-refunds]" in out.answer


async def test_failover_to_secondary_is_not_degraded(llm, llm2, turn):
    llm.script(mode="503")
    out = await llm_generator(llm, llm2).generate(turn)
    assert out.provider == "llm-1" and not out.degraded


async def test_empty_llm_answer_falls_back(llm, turn):
    llm.script(answer="   ")
    out = await llm_generator(llm).generate(turn)
    assert out.degraded and out.provider == "extractive" and "empty completion" in out.generation_error


async def test_retrieval_failure_says_it_could_not_look_things_up(llm):
    turn = make_turn(passages=[], retrieval_ok=False, retrieval_error="weaviate unreachable")
    out = await llm_generator(llm).generate(turn)
    assert out.answer == RETRIEVAL_DOWN and out.degraded
    assert "weaviate unreachable" in out.generation_error
    assert llm.stats()["total"] == 0  # nothing to ground an answer on: no LLM call


async def test_no_passages_extractive_says_so(turn):
    fallback = ExtractiveProvider()
    out = await Generator(fallback, fallback, system_prompt=SYSTEM).generate(make_turn(passages=[]))
    assert out.answer == NO_ANSWER


async def test_outage_opens_the_circuit_then_recovery_closes_it(llm, turn):
    generator = llm_generator(llm, threshold=2, reset_s=0.4)
    breaker = generator.provider.providers[0].breaker
    llm.script(mode="500")
    first = await generator.generate(turn)
    assert first.degraded and breaker.state is CircuitState.OPEN
    calls = llm.stats()["total"]
    second = await generator.generate(turn)  # circuit open: the fallback answers without calling the LLM
    assert second.degraded and "circuit open" in second.generation_error
    assert llm.stats()["total"] == calls  # no request at all, so nothing to wait for (no timed assertion)
    llm.script(mode="ok")
    time.sleep(0.45)
    third = await generator.generate(turn)
    assert not third.degraded and third.provider == "llm-0" and breaker.state is CircuitState.CLOSED


def test_build_generator_from_settings(llm):
    plain = build_generator(Settings(llm_base_url=None, llm_api_key=None))
    assert isinstance(plain.provider, ExtractiveProvider) and plain.provider is plain.fallback

    one = build_generator(Settings(llm_base_url=llm.base_url, llm_api_key=None, llm_model="m1"))
    assert isinstance(one.provider, FailoverProvider)
    assert [p.name for p in one.provider.providers] == ["openai"]

    two = build_generator(
        Settings(
            llm_base_url=llm.base_url,
            llm_api_key="sk-test",
            llm_secondary_base_url="http://127.0.0.1:9/v1",
            llm_secondary_model="m2",
            llm_max_retries=4,
            circuit_failure_threshold=7,
            llm_retry_after_max_s=3,
        )
    )
    primary, secondary = two.provider.providers
    assert (secondary.name, secondary.model) == ("openai-secondary", "m2")
    assert primary.policy.max_attempts == 5 and primary.policy.max_retry_after_s == 3
    assert primary.breaker.failure_threshold == 7 and secondary.breaker is not primary.breaker


async def test_build_generator_talks_to_the_configured_server(llm, turn):
    generator = build_generator(Settings(llm_base_url=llm.base_url, llm_api_key=None, llm_model="served"))
    out = await generator.generate(turn)
    assert out.model == "served" and out.provider == "openai" and not out.degraded
    await generator.aclose()


async def test_provider_trouble_end_to_end_through_validation(llm):
    """429 honoured, then an outage: FALLBACK, then ESCALATED on repeated failures, then recovery."""
    from processors.records import Status
    from processors.validation import Validator

    validator = Validator(system_prompt=SYSTEM, min_groundedness=0.35, escalate_after_failures=2)
    generator = llm_generator(llm, threshold=2, reset_s=0.4, timeout_s=0.3)
    breaker = generator.provider.providers[0].breaker

    llm.script(fail_next=[{"status": 429, "retry_after": 0.2}])
    ok = validator.validate(await generator.generate(make_turn()))
    assert ok.response.status is Status.ANSWERED and ok.response.citations[0].doc_id == "billing-refunds"

    llm.script(mode="hang")  # timeouts until the circuit opens
    first = validator.validate(await generator.generate(make_turn(session_failures=0)))
    assert first.response.status is Status.FALLBACK and first.response.reason == "degraded"
    assert breaker.state is CircuitState.OPEN
    third = validator.validate(await generator.generate(make_turn(session_failures=2)))
    assert third.response.status is Status.ESCALATED and third.escalation.reason == "repeated_failures"

    llm.script(mode="ok", release=True)
    time.sleep(0.45)
    back = validator.validate(await generator.generate(make_turn(session_failures=3)))
    assert back.response.status is Status.ANSWERED and back.response.model == "model-0"
    assert breaker.state is CircuitState.CLOSED
