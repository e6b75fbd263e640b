"""Workers die with turns in flight: every turn still gets exactly one reply, sessions stay in order."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from tests.audit import audit_when_done
from tests.faults.conftest import pipeline_settings
from tests.faults.outcomes import conversation, report, send_all, wait_all, wait_count

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]


async def first_reply_after(client, count: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while len(client.reply_order) <= count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no reply within {timeout_s} s after the fault")
        await asyncio.sleep(0.05)
    return time.monotonic()


async def test_kill_9_with_200_turns_in_flight(fault_stack, llm, workers, client_for) -> None:
    llm.script(latency_ms=500)
    settings = pipeline_settings(fault_stack, llm)
    worker = workers.start(settings)
    client = await client_for(settings)
    requests = conversation(sessions=20, turns_per_session=10, handoff_every=7)
    await send_all(client, requests)
    await wait_count(client, requests, 40, timeout_s=60)

    crash_at, answered = time.monotonic(), set(client.replies)
    worker.kill()
    killed_at, replied_before = time.monotonic(), len(client.reply_order)
    hit = llm.log.generating_at(crash_at, answered)
    assert hit, "the crash must hit turns in flight (generated or being generated, not answered)"
    workers.start(settings, wait=False)
    flowing_at = await first_reply_after(client, replied_before + 5, timeout_s=90)  # past any stragglers
    # a kill between producing a reply and appending it to the history must not lose that entry:
    # validate records the answer of a turn that comes back as a duplicate
    result = await audit_when_done(client, requests, timeout_s=120)

    report(f"worker kill -9 (200 turns, 500 ms LLM, {len(hit)} mid-pipeline)", "replies paused, then all came, in order", result, flowing_at - killed_at)
    result.assert_clean()
    assert result.escalations, "the handoff turns were escalated (so escalations are audited too)"


async def wait_assigned(worker, topic: str, timeout_s: float = 60) -> None:
    """Until the worker's log shows partitions of ``topic`` assigned to it (the runtime logs
    ``assigned <topic>[0,1,2] ...`` on every assignment)."""
    deadline = time.monotonic() + timeout_s
    assigned = re.compile(r"assigned .*" + re.escape(topic) + r"\[\d")
    while not assigned.search(worker.log_path.read_text(errors="replace")):
        assert worker.alive(), worker.tail()
        if time.monotonic() > deadline:
            raise AssertionError(f"no partitions of {topic} assigned within {timeout_s} s:\n{worker.tail()}")
        await asyncio.sleep(0.1)


async def test_second_worker_joins_then_one_is_killed(fault_stack, llm, workers, client_for) -> None:
    """Scale out mid-stream (partitions revoked with turns in flight), then kill -9 one of the two."""
    llm.script(latency_ms=500)
    settings = pipeline_settings(fault_stack, llm)
    first = workers.start(settings)
    client = await client_for(settings)
    requests = conversation(sessions=20, turns_per_session=16, handoff_every=7)
    await send_all(client, requests)
    await wait_count(client, requests, 20, timeout_s=60)

    second = workers.start(settings)  # joins the group: the first worker's partitions are rebalanced
    joined_at = time.monotonic()
    await wait_assigned(second, settings.topics.inbound)
    rebalance_s = time.monotonic() - joined_at
    # a worker takes seconds to start and join, and the first may have answered nearly all of the
    # first wave by then: a second wave of sessions makes sure the kill finds both at work
    more = conversation(sessions=20, turns_per_session=8, handoff_every=7)
    await send_all(client, more)
    await wait_count(client, more, 20, timeout_s=60)
    requests += more
    crash_at, answered = time.monotonic(), set(client.replies)
    first.kill()
    killed_at = time.monotonic()
    assert llm.log.generating_at(crash_at, answered), "the kill must hit turns in flight (generated or being generated, not answered)"
    done_at = await wait_all(client, requests, timeout_s=120)
    # a kill between producing a reply and appending it to the history must not lose that entry:
    # validate records the answer of a turn that comes back as a duplicate
    result = await audit_when_done(client, requests, timeout_s=120)
    assert second.alive(), second.tail()

    report(
        "2nd worker joins mid-stream, then 1 of 2 kill -9",
        f"rebalance took {rebalance_s:.1f} s; replies of the dead worker's sessions paused, then came",
        result,
        done_at - killed_at,
    )
    result.assert_clean()
    assert result.escalations, "the handoff turns were escalated (so escalations are audited too)"
