"""The lean provider over both of its transports (aiohttp, httpx's own) against the scripted server:
real HTTP on loopback, the same outcomes mapped the same way whatever runs underneath."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from genhelpers import REFUND_PASSAGES

from processors.generation.aiohttp_transport import AiohttpTransport
from processors.generation.http_provider import HttpxChatProvider
from processors.generation.prompt import build_prompt
from processors.generation.provider import PermanentError, RetryableError

PROMPT = build_prompt(
    system_prompt="Answer from the passages.", question="How long do refunds take?", passages=REFUND_PASSAGES, budget_tokens=3000
)


@pytest.fixture(params=["aiohttp", "httpx"])
def make(request):
    def provider_for(base_url: str, timeout_s: float = 5.0) -> HttpxChatProvider:
        transport = AiohttpTransport() if request.param == "aiohttp" else None
        provider = HttpxChatProvider(base_url=base_url, api_key="test", model="test-model", timeout_s=timeout_s,
                                     transport=transport)
        return provider

    return provider_for


async def call(provider: HttpxChatProvider):
    return await provider.complete(PROMPT.messages, max_tokens=200, passages=PROMPT.passages)


async def test_grounded_completion_with_usage(llm, make):
    provider = make(llm.base_url)
    completion = await call(provider)
    assert "[billing-refunds]" in completion.text and "14 days" in completion.text
    assert completion.model == "test-model" and completion.provider == "openai"
    assert completion.prompt_tokens > 50 and completion.completion_tokens > 5
    again = await call(provider)  # the pooled connection is reused
    assert again.text == completion.text
    assert llm.stats()["by_outcome"] == {"ok": 2}
    await provider.aclose()


async def test_streamed_pieces_concatenate_to_the_answer(llm, make):
    llm.script(token_ms=5, tokens=20)
    provider = make(llm.base_url)
    pieces: list[str] = []
    completion = await provider.stream(PROMPT.messages, max_tokens=200, passages=PROMPT.passages, on_delta=pieces.append)
    assert len(pieces) == 20 and "".join(pieces).strip() == completion.text
    assert completion.ttft_ms is not None and completion.completion_tokens > 0
    await provider.aclose()


async def test_429_is_retryable_with_the_retry_after_hint(llm, make):
    llm.script(fail_next=[{"status": 429, "retry_after": 2}])
    provider = make(llm.base_url)
    with pytest.raises(RetryableError) as info:
        await call(provider)
    assert info.value.status == 429 and info.value.retry_after == 2.0
    await provider.aclose()


@pytest.mark.parametrize("status, error", [(503, RetryableError), (500, RetryableError), (401, PermanentError)])
async def test_status_errors_keep_their_class(llm, make, status, error):
    llm.script(fail_next=[{"status": status}])
    provider = make(llm.base_url)
    with pytest.raises(error) as info:
        await call(provider)
    assert info.value.status == status
    assert (await call(provider)).text  # the connection after an error response still serves
    await provider.aclose()


async def test_a_hanging_server_times_out_as_retryable(llm, make):
    llm.script(fail_next=[{"hang": True}])
    provider = make(llm.base_url, timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(RetryableError, match="timed out"):
        await call(provider)
    assert 0.35 < time.monotonic() - started < 3
    await provider.aclose()


async def test_connection_refused_is_retryable(make):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make(f"http://127.0.0.1:{port}/v1", timeout_s=2)
    with pytest.raises(RetryableError, match="connection error"):
        await call(provider)
    await provider.aclose()


async def test_a_stream_cancelled_midway_leaves_the_provider_usable(llm, make):
    llm.script(token_ms=50, tokens=40)  # two seconds of answer
    provider = make(llm.base_url)
    pieces: list[str] = []
    task = asyncio.create_task(provider.stream(PROMPT.messages, max_tokens=200, passages=[], on_delta=pieces.append))
    while len(pieces) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    llm.script(token_ms=0, tokens=5)
    done: list[str] = []
    completion = await provider.stream(PROMPT.messages, max_tokens=200, passages=[], on_delta=done.append)
    assert len(done) == 5 and completion.text
    await provider.aclose()


async def test_many_calls_at_once_share_the_pool(llm, make):
    provider = make(llm.base_url)
    completions = await asyncio.gather(*(call(provider) for _ in range(40)))
    assert len({c.text for c in completions}) == 1 and completions[0].text
    await provider.aclose()
