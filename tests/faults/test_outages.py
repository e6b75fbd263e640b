"""Servers stopped mid-stream (Kafka, Redis, Weaviate) and started again: the pipeline recovers by itself."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from processors.records import Status
from tests.audit import audit_when_done
from tests.faults.conftest import pipeline_settings
from tests.faults.outcomes import conversation, report, send_all, wait_all, wait_count
from tests.e2e.turns import new_request

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


async def wait_for_log(worker, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in worker.log_path.read_text(errors="replace"):
        assert worker.alive(), worker.tail()
        if time.monotonic() > deadline:
            raise AssertionError(f"worker never logged {text!r}:\n{worker.tail()}")
        await asyncio.sleep(0.1)


async def test_broker_restart_mid_stream(fault_stack, llm, workers, client_for) -> None:
    llm.script(latency_ms=200)
    settings = pipeline_settings(fault_stack, llm)
    worker = workers.start(settings)
    client = await client_for(settings)
    before = conversation(sessions=10, turns_per_session=5)
    during = conversation(sessions=10, turns_per_session=5, handoff_every=7)
    await send_all(client, before)
    await wait_count(client, before, 10, timeout_s=60)

    down_at = time.monotonic()
    assert llm.log.generating_at(down_at, set(client.replies)), "the broker must go away with turns in flight"
    await asyncio.to_thread(fault_stack.down, "kafka")
    # a channel keeps sending while the broker is away: its producer buffers and retries
    sending = asyncio.create_task(send_all(client, during))
    await asyncio.to_thread(fault_stack.up, "kafka")
    up_at = time.monotonic()
    await asyncio.wait_for(sending, 120)  # raises if a send failed instead of waiting for the broker
    done_at = await wait_all(client, before + during, timeout_s=150)
    result = await audit_when_done(client, before + during, timeout_s=150)
    assert worker.alive(), worker.tail()

    report(
        "Kafka stopped and restarted",
        f"replies paused for the outage ({up_at - down_at:.0f} s without a broker), then all came",
        result,
        done_at - up_at,
    )
    result.assert_clean()
    assert result.escalations, "the handoff turns were escalated (so escalations are audited too)"


async def test_redis_outage_waits_then_resumes(fault_stack, llm, workers, client_for) -> None:
    settings = pipeline_settings(fault_stack, llm)
    worker = workers.start(settings)
    pid = worker.pid
    client = await client_for(settings)
    before = conversation(sessions=5, turns_per_session=2)
    await send_all(client, before)
    await wait_all(client, before, timeout_s=60)

    during = conversation(sessions=10, turns_per_session=3)
    down_at = time.monotonic()
    with fault_stack.outage("redis"):
        await send_all(client, during)
        await wait_for_log(worker, "(attempt 5)", timeout_s=60)  # backed off five times, still waiting
        assert not any(r.message_id in client.replies for r in during), "no turn can be answered without Redis"
        assert worker.alive() and worker.pid == pid, "the worker waits, it does not crash"
    up_at = time.monotonic()
    done_at = await wait_all(client, during, timeout_s=90)
    result = await audit_when_done(client, before + during, timeout_s=90)
    assert worker.alive() and worker.pid == pid, worker.tail()

    report(
        "Redis stopped and restarted",
        f"no reply for {up_at - down_at:.0f} s (stages wait with backoff, worker stays up), then all came",
        result,
        done_at - up_at,
    )
    result.assert_clean()
    statuses = {client.replies[r.message_id][0].status for r in during}
    assert statuses <= {Status.ANSWERED, Status.FALLBACK}, statuses


async def test_weaviate_outage_degrades_then_recovers(fault_stack, llm, workers, client_for) -> None:
    settings = pipeline_settings(fault_stack, llm)
    workers.start(settings)
    client = await client_for(settings)
    question = "How do I reset my password?"
    sent = []

    async def ask():  # type: ignore[no-untyped-def]
        sent.append(new_request(question, f"web:{uuid.uuid4().hex[:8]}"))
        return await client.ask(sent[-1], timeout_s=60)

    grounded = await ask()
    assert grounded.status is Status.ANSWERED and grounded.citations, grounded

    degraded = []
    with fault_stack.outage("weaviate"):
        for _ in range(3):
            started = time.monotonic()
            reply = await ask()
            degraded.append((reply, time.monotonic() - started))
    for reply, took in degraded:
        assert reply.status in (Status.FALLBACK, Status.ESCALATED), reply
        assert "could not look that up" in reply.text, reply.text
        assert not reply.citations
        assert took < 15, f"a degraded answer took {took:.1f} s"

    up_at = time.monotonic()
    recovered = None
    while recovered is None:
        assert time.monotonic() - up_at < 60, "answers never became grounded again"
        reply = await ask()
        if reply.status is Status.ANSWERED and reply.citations:
            recovered = time.monotonic() - up_at
        else:
            await asyncio.sleep(0.5)
    result = await audit_when_done(client, sent, timeout_s=60)
    report("Weaviate stopped and restarted", "'could not look that up' (FALLBACK/ESCALATED) in "
           f"{max(t for _, t in degraded):.1f} s max, grounded again after", result, recovered)
    result.assert_clean()
