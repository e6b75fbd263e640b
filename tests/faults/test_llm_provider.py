"""LLM provider trouble (scripted server): bounded retries, the circuit opens, FALLBACK fast, and closes again."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from processors.records import ChatResponse, Status
from tests.e2e.turns import new_request
from tests.audit import audit_when_done
from tests.faults.conftest import pipeline_settings
from tests.faults.outcomes import report

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

QUESTION = "How do I export my data?"


SENT = []


async def ask(client, timeout_s: float = 60) -> tuple[ChatResponse, float]:
    """One turn in a fresh session (a session's earlier failures would escalate it), tagged with its id."""
    mid = str(uuid.uuid4())
    request = new_request(f"{QUESTION} (ref {mid})", f"web:{uuid.uuid4().hex[:8]}", message_id=mid)
    SENT.append(request)
    started = time.monotonic()
    reply = await client.ask(request, timeout_s=timeout_s)
    return reply, time.monotonic() - started


def chat_calls(llm) -> int:
    return sum(v for k, v in llm.stats()["by_endpoint"].items() if "chat" in k)


async def settle_calls(llm, timeout_s: float = 5.0) -> None:
    """Wait until no chat request is in flight on the scripted server."""
    deadline = time.monotonic() + timeout_s
    while llm.stats()["in_flight"]:
        assert time.monotonic() < deadline, f"LLM calls still in flight after {timeout_s} s: {llm.stats()}"
        await asyncio.sleep(0.05)


async def test_retries_circuit_breaker_and_recovery(fault_stack, llm, workers, client_for) -> None:
    settings = pipeline_settings(
        fault_stack,
        llm,
        llm_timeout_s=1.0,
        llm_max_retries=2,
        llm_backoff_base_s=0.05,
        llm_retry_after_max_s=2.0,
        llm_deadline_s=6.0,
        circuit_failure_threshold=3,
        circuit_reset_s=3.0,
    )
    workers.start(settings)
    client = await client_for(settings)
    SENT.clear()
    reply, _ = await ask(client)
    assert reply.status is Status.ANSWERED, reply

    # one-off trouble: each is retried (bounded) and the user gets a normal answer
    one_offs = {
        "429 + Retry-After": {"status": 429, "retry_after": 0.5},
        "500": {"status": 500},
        "slow (over llm_timeout_s)": {"latency_ms": 2500},
        "hanging connection": {"hang": True},
    }
    for name, fault in one_offs.items():
        calls = chat_calls(llm)
        llm.script(fail_next=[fault])
        reply, took = await ask(client)
        assert reply.status is Status.ANSWERED, (name, reply)
        await settle_calls(llm)  # a slow call is counted when it ends
        assert chat_calls(llm) - calls == 2, f"{name}: one failed attempt and one retry"
        assert llm.log.per_message()[reply.message_id] == 2, f"{name}: both attempts were for this turn"
        if name.startswith("429"):
            assert took >= 0.5, "the Retry-After hint was honoured"
        assert took < 10, f"{name}: took {took:.1f} s"

    # a provider that keeps failing: retries stay bounded, the circuit opens, answers go on as FALLBACK
    llm.script(mode="500")
    calls = chat_calls(llm)
    first, took_first = await ask(client)
    assert first.status in (Status.FALLBACK, Status.ESCALATED), first
    assert chat_calls(llm) - calls == 3, "max_retries=2: three attempts, then the fallback"
    fast = []
    for _ in range(4):
        reply, took = await ask(client)
        assert reply.status in (Status.FALLBACK, Status.ESCALATED), reply
        assert reply.text.strip()
        fast.append(took)
    await settle_calls(llm)
    open_calls = chat_calls(llm) - calls - 3
    assert open_calls <= 1, f"the open circuit still let {open_calls} calls through"
    assert max(fast) < 3.0, f"with the circuit open answers must be fast, took {fast}"

    # the provider recovers: after circuit_reset_s a probe goes through and closes the circuit
    llm.script(mode="ok")
    ok_at = time.monotonic()
    while True:
        reply, _ = await ask(client)
        if reply.status is Status.ANSWERED:
            break
        assert time.monotonic() - ok_at < 30, "the circuit never closed again"
        await asyncio.sleep(0.3)
    closed_after = time.monotonic() - ok_at
    for _ in range(3):
        reply, _ = await ask(client)
        assert reply.status is Status.ANSWERED, reply
    result = await audit_when_done(client, SENT, timeout_s=60)
    report(
        "LLM 429/500/slow/hang once; then 500 for good",
        f"one-offs: ANSWERED after 1 retry; outage: FALLBACK (first in {took_first * 1000:.0f} ms after 3 attempts, "
        f"then <= {max(fast) * 1000:.0f} ms with the circuit open, {open_calls} calls)",
        result,
        closed_after,
    )
    result.assert_clean()
