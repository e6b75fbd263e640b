"""A burst far over the sustainable rate: in-flight work stays bounded, memory stays flat, the backlog drains."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.audit import audit_when_done
from tests.faults.conftest import pipeline_settings
from tests.faults.outcomes import conversation, report, send_all, wait_all

pytestmark = [pytest.mark.stack, pytest.mark.timeout(480)]

MAX_IN_FLIGHT = 16


async def sample_llm_in_flight(llm, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], llm.stats()["in_flight"])
        await asyncio.sleep(0.02)


async def run_load(client, llm, requests) -> tuple[float, float, int]:
    """Send all at once; returns (seconds to send, seconds to drain, peak LLM calls in flight)."""
    peak, stop = [0], asyncio.Event()
    sampler = asyncio.create_task(sample_llm_in_flight(llm, peak, stop))
    started = time.monotonic()
    await send_all(client, requests)
    sent = time.monotonic()
    await wait_all(client, requests, timeout_s=240)
    drained = time.monotonic()
    stop.set()
    await sampler
    return sent - started, drained - started, peak[0]


async def test_burst_ten_times_the_sustainable_rate(fault_stack, llm, workers, client_for) -> None:
    llm.script(latency_ms=100)
    settings = pipeline_settings(fault_stack, llm, max_in_flight=MAX_IN_FLIGHT)
    worker = workers.start(settings)
    client = await client_for(settings)

    steady = conversation(sessions=30, turns_per_session=10)
    _, steady_s, steady_peak = await run_load(client, llm, steady)
    rss_steady = worker.peak_rss_mb()
    rate = len(steady) / steady_s

    burst = conversation(sessions=300, turns_per_session=10)
    send_s, drain_s, burst_peak = await run_load(client, llm, burst)
    rss_burst = worker.peak_rss_mb()
    offered = len(burst) / send_s
    result = await audit_when_done(client, steady + burst, timeout_s=120)

    report(
        f"burst of {len(burst)} turns at {offered:.0f}/s (sustainable {rate:.0f}/s)",
        f"replies slowed, backlog drained in {drain_s:.0f} s; worker peak RSS {rss_steady:.0f} -> {rss_burst:.0f} MiB; "
        f"LLM calls in flight <= {burst_peak}",
        result,
        drain_s,
    )
    result.assert_clean()
    assert offered >= 10 * rate, f"not a 10x burst: offered {offered:.0f}/s vs sustainable {rate:.0f}/s"
    assert burst_peak <= MAX_IN_FLIGHT, f"{burst_peak} LLM calls at once with max_in_flight={MAX_IN_FLIGHT}"
    # ten times the turns must not mean ten times the memory: the window caps what is held at once
    assert rss_burst <= rss_steady * 1.2 + 40, f"peak RSS grew from {rss_steady:.0f} to {rss_burst:.0f} MiB"
    assert worker.alive()
