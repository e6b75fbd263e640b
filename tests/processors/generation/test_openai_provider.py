"""OpenAIProvider against the scripted server on a loopback port: real HTTP, real SDK."""

import email.utils
import socket
import time

import pytest
from genhelpers import REFUND_PASSAGES

from processors.generation.openai_provider import OpenAIProvider, parse_retry_after
from processors.generation.prompt import build_prompt
from processors.generation.provider import PermanentError, RetryableError

PROMPT = build_prompt(
    system_prompt="Answer from the passages.", question="How long do refunds take?", passages=REFUND_PASSAGES, budget_tokens=3000
)


def provider_for(server, timeout_s=5.0, **kw):
    return OpenAIProvider(base_url=server.base_url, api_key="test", model="test-model", timeout_s=timeout_s, **kw)


async def call(provider):
    return await provider.complete(PROMPT.messages, max_tokens=200, passages=PROMPT.passages)


async def test_grounded_completion_with_usage(llm):
    provider = provider_for(llm)
    completion = await call(provider)
    assert "[billing-refunds]" in completion.text and "14 days" in completion.text
    assert completion.model == "test-model" and completion.provider == "openai"
    assert completion.prompt_tokens > 50 and completion.completion_tokens > 5
    assert llm.stats()["by_outcome"] == {"ok": 1}
    await provider.aclose()


async def test_429_is_retryable_with_the_retry_after_hint(llm):
    llm.script(fail_next=[{"status": 429, "retry_after": 2}])
    with pytest.raises(RetryableError) as info:
        await call(provider_for(llm))
    assert info.value.status == 429 and info.value.retry_after == 2.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retryable(llm, status):
    llm.script(fail_next=[{"status": status}])
    with pytest.raises(RetryableError) as info:
        await call(provider_for(llm))
    assert info.value.status == status and info.value.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_4xx_is_permanent(llm, status):
    llm.script(fail_next=[{"status": status}])
    with pytest.raises(PermanentError) as info:
        await call(provider_for(llm))
    assert info.value.status == status


async def test_a_hanging_server_times_out_as_retryable(llm):
    llm.script(fail_next=[{"hang": True}])
    started = time.monotonic()
    with pytest.raises(RetryableError, match="timed out"):
        await call(provider_for(llm, timeout_s=0.4))
    assert 0.35 < time.monotonic() - started < 3
    assert llm.stats()["by_outcome"] == {"hang": 1}


async def test_connection_refused_is_retryable():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", model="m", timeout_s=2)
    with pytest.raises(RetryableError, match="connection error"):
        await call(provider)


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after({"retry-after": date}, now=now) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_bad_construction_is_refused():
    with pytest.raises(ValueError):
        OpenAIProvider(base_url="http://x/v1", model="", timeout_s=1)
    with pytest.raises(ValueError):
        OpenAIProvider(base_url="http://x/v1", model="m", timeout_s=0)
