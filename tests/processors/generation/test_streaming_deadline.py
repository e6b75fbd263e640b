"""Streaming and the turn deadline against the scripted LLM (no other services).

What is checked: pieces arrive as the provider streams them; a provider that cannot stream gives
one piece; a hung provider costs the first-token deadline, not stacked timeouts; when the circuit
opens every turn still waiting moves to the fallback at once; a slow but steady stream is never cut
off by the budget; a stream that stops is.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from genhelpers import make_turn

from processors.circuit import CircuitBreaker
from processors.generation.deadline import TurnDeadline
from processors.generation.extractive import ExtractiveProvider
from processors.generation.failover import FailoverProvider
from processors.generation.generator import Generator
from processors.generation.aiohttp_transport import AiohttpTransport
from processors.generation.http_provider import HttpxChatProvider
from processors.generation.openai_provider import OpenAIProvider
from processors.generation.resilience import RetryPolicy

SYSTEM = "You are the support assistant. Answer only from the passages."


def generator(*servers, first_token_s=1.0, budget_s=12.0, stall_s=1.0, threshold=5, attempts=3,
              client="aiohttp"):
    """The production chain; ``client`` picks the wire under the lean provider (aiohttp is the default)."""
    def provider(i, s):
        kw = dict(base_url=s.base_url, api_key="k", model=f"model-{i}", timeout_s=60, name=f"llm-{i}")
        if client == "openai":
            return OpenAIProvider(**kw)
        return HttpxChatProvider(**kw, transport=AiohttpTransport() if client == "aiohttp" else None)

    providers = [provider(i, s) for i, s in enumerate(servers)]
    chain = FailoverProvider(
        providers,
        policy_factory=lambda: RetryPolicy(max_attempts=attempts, base_s=0.05, max_backoff_s=0.2),
        breaker_factory=lambda: CircuitBreaker(failure_threshold=threshold, reset_s=60),
    )
    return Generator(
        chain,
        ExtractiveProvider(),
        system_prompt=SYSTEM,
        turn_budget_s=budget_s,
        first_token_s=first_token_s,
        stall_s=stall_s,
    )


@pytest.mark.parametrize("client", ["aiohttp", "httpx", "openai"], ids=["aiohttp", "httpx", "openai-sdk"])
async def test_pieces_arrive_while_the_answer_is_written(llm, client):
    llm.script(latency_ms=100, token_ms=30, tokens=12)
    pieces: list[tuple[float, str]] = []
    started = time.monotonic()
    out = await generator(llm, client=client).generate(make_turn(), on_delta=lambda t: pieces.append((time.monotonic(), t)))
    assert not out.degraded and out.provider == "llm-0"
    assert len(pieces) == 12
    assert "".join(t for _, t in pieces).strip() == out.answer
    assert pieces[-1][0] - pieces[0][0] >= 0.25  # 11 gaps of 30 ms: they came one by one
    assert pieces[0][0] - started < 1.0


async def test_a_provider_that_cannot_stream_gives_one_piece():
    pieces: list[str] = []
    gen = Generator(ExtractiveProvider(), ExtractiveProvider(), system_prompt=SYSTEM)
    out = await gen.generate(make_turn(), on_delta=pieces.append)
    assert pieces == [out.answer] and out.answer


async def test_twenty_turns_on_a_hung_provider_fall_back_within_the_first_token_deadline(llm):
    llm.script(mode="hang")
    gen = generator(llm, first_token_s=1.0, threshold=50)  # the circuit stays closed: the deadline alone
    started = time.monotonic()

    async def one(i: int) -> float:
        out = await gen.generate(make_turn(message_id=f"m-{i}"))
        assert out.degraded and "FirstTokenTimeout" in (out.generation_error or "")
        return time.monotonic() - started

    took = await asyncio.gather(*(one(i) for i in range(20)))
    assert max(took) < 1.0 + 1.0, took
    assert min(took) >= 0.95  # each waited its first-token deadline, and no retry was stacked on it
    await gen.aclose()


async def test_when_the_circuit_opens_every_waiting_turn_falls_back_at_once(llm):
    # the first five calls fail fast and open the circuit; the other fifteen hang meanwhile
    llm.script(mode="hang", fail_next=[{"status": 500}] * 5)
    gen = generator(llm, first_token_s=30.0, threshold=5, attempts=1)
    started = time.monotonic()
    outs = await asyncio.wait_for(
        asyncio.gather(*(gen.generate(make_turn(message_id=f"m-{i}")) for i in range(20))), 10
    )
    took = time.monotonic() - started
    assert all(o.degraded for o in outs)
    assert sum("CircuitOpenError" in (o.generation_error or "") for o in outs) >= 15
    assert took < 3.0, took  # not the 30 s first-token deadline
    await gen.aclose()


async def test_a_slow_but_steady_stream_is_never_cut_off(llm):
    llm.script(latency_ms=200, token_ms=250, tokens=10)  # 2.5 s in all, longer than the whole budget
    pieces: list[str] = []
    out = await generator(llm, first_token_s=1.0, budget_s=1.5, stall_s=1.0).generate(make_turn(),
                                                                                    on_delta=pieces.append)
    assert not out.degraded, out.generation_error
    assert len(pieces) == 10 and "".join(pieces).strip() == out.answer


async def test_a_stream_that_stops_is_ended_by_the_stall_limit(llm):
    llm.script(latency_ms=50, token_ms=3000, tokens=3)
    started = time.monotonic()
    out = await generator(llm, stall_s=0.5).generate(make_turn(), on_delta=lambda t: None)
    assert out.degraded and "StreamBroken" in out.generation_error and "stalled" in out.generation_error
    assert time.monotonic() - started < 2.0


async def test_retries_stop_when_the_turn_budget_is_spent(llm):
    llm.script(mode="500")
    gen = generator(llm, budget_s=0.6, first_token_s=5.0, attempts=100, threshold=1000)
    started = time.monotonic()
    out = await gen.generate(make_turn())
    assert out.degraded and time.monotonic() - started < 1.2
    assert llm.stats()["by_outcome"]["500"] >= 2  # it did retry, inside the budget


def test_turn_deadline_arithmetic():
    now = [100.0]
    d = TurnDeadline(budget_s=12, first_token_s=4, stall_s=2, clock=lambda: now[0])
    assert d.remaining() == 12 and d.first_token_due(100.0) == 104.0
    now[0] = 110.0
    assert d.first_token_due(110.0) == 112.0  # a late provider gets what is left of the budget
    assert d.may_wait(1.0) and not d.may_wait(2.0)
    assert not d.streaming and d.mark_first_token() == 10.0 and d.streaming
    now[0] = 111.0
    assert d.mark_first_token() == 10.0  # the first one counts
    with pytest.raises(ValueError):
        TurnDeadline(budget_s=0)
