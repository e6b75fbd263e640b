"""Failover between two scripted servers."""

import pytest
from genhelpers import REFUND_PASSAGES

from processors.generation.failover import FailoverProvider
from processors.generation.openai_provider import OpenAIProvider
from processors.generation.prompt import build_prompt
from processors.generation.provider import AllProvidersFailedError, CircuitOpenError, RetryableError
from processors.generation.resilience import CircuitBreaker, CircuitState, RetryPolicy

PROMPT = build_prompt(system_prompt="sys", question="refunds?", passages=REFUND_PASSAGES, budget_tokens=3000)


def chain(primary, secondary, *, threshold=2):
    return FailoverProvider(
        [
            OpenAIProvider(base_url=primary.base_url, api_key="k", model="primary-model", timeout_s=0.5, name="primary"),
            OpenAIProvider(base_url=secondary.base_url, api_key="k", model="secondary-model", timeout_s=0.5, name="secondary"),
        ],
        policy_factory=lambda: RetryPolicy(max_attempts=2, base_s=0.01, max_backoff_s=0.02),
        breaker_factory=lambda: CircuitBreaker(failure_threshold=threshold, reset_s=60),
    )


async def call(provider):
    return await provider.complete(PROMPT.messages, max_tokens=100, passages=PROMPT.passages)


async def test_primary_answers_when_healthy(llm, llm2):
    completion = await call(chain(llm, llm2))
    assert completion.provider == "primary" and completion.model == "primary-model"
    assert llm2.stats()["total"] == 0


async def test_fails_over_to_the_secondary(llm, llm2):
    llm.script(mode="500")
    provider = chain(llm, llm2)
    completion = await call(provider)
    assert completion.provider == "secondary" and completion.model == "secondary-model"
    assert llm.stats()["by_outcome"] == {"500": 2} and llm2.stats()["by_outcome"] == {"ok": 1}
    # The primary's circuit is now open (2 failures): the next turn goes straight to the secondary.
    assert provider.providers[0].breaker.state is CircuitState.OPEN
    assert (await call(provider)).provider == "secondary"
    assert llm.stats()["by_outcome"] == {"500": 2}


async def test_a_hanging_primary_fails_over(llm, llm2):
    llm.script(mode="hang")
    completion = await call(chain(llm, llm2))
    assert completion.provider == "secondary"


async def test_all_down_raises_with_every_reason(llm, llm2):
    llm.script(mode="500")
    llm2.script(mode="429", retry_after=0.01)
    provider = chain(llm, llm2)
    with pytest.raises(AllProvidersFailedError) as info:
        await call(provider)
    assert [type(e) for e in info.value.errors] == [RetryableError, RetryableError]
    assert [e.provider for e in info.value.errors] == ["primary", "secondary"]
    assert not info.value.circuit_open
    with pytest.raises(AllProvidersFailedError) as info:
        await call(provider)
    assert info.value.circuit_open and all(isinstance(e, CircuitOpenError) for e in info.value.errors)


def test_names_must_be_unique(llm):
    one = OpenAIProvider(base_url=llm.base_url, api_key="k", model="m")
    with pytest.raises(ValueError):
        FailoverProvider([one, OpenAIProvider(base_url=llm.base_url, api_key="k", model="m")])
    with pytest.raises(ValueError):
        FailoverProvider([])
