"""SIGTERM with turns in flight: finish them, commit, exit 0; a restart repeats nothing that was finished."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.conftest import pipeline_settings
from tests.faults.outcomes import conversation, outcome, report, send_all, wait_all, wait_count

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

GRACE_S = 15.0


def chat_calls(llm) -> int:
    return llm.stats()["by_endpoint"].get("chat", 0)


async def test_sigterm_finishes_in_flight_turns_and_restart_repeats_nothing(fault_stack, llm, workers, client_for) -> None:
    llm.script(latency_ms=800)
    settings = pipeline_settings(fault_stack, llm, shutdown_grace_s=GRACE_S)
    worker = workers.start(settings)
    client = await client_for(settings)
    requests = conversation(sessions=20, turns_per_session=6)
    await send_all(client, requests)
    await wait_count(client, requests, 30, timeout_s=60)

    in_flight_llm = llm.stats()["in_flight"]
    assert in_flight_llm > 0, "SIGTERM must arrive with turns in flight"
    stopping_at = time.monotonic()
    code = await asyncio.to_thread(worker.terminate, GRACE_S + 30)
    stopped_s = time.monotonic() - stopping_at
    assert code == 0, f"exit code {code}:\n{worker.tail(60)}"
    assert stopped_s < GRACE_S + 10, f"shutdown took {stopped_s:.1f} s"
    await client.settle(1.0)
    answered_before = {r.message_id for r in requests if r.message_id in client.replies}
    calls_before = chat_calls(llm)

    workers.start(settings)
    await wait_all(client, requests, timeout_s=120)
    await client.settle(3.0)
    repeated_llm_calls = chat_calls(llm) - calls_before - (len(requests) - len(answered_before))

    result = outcome(client, requests)
    report(
        f"SIGTERM with {in_flight_llm} LLM calls in flight",
        f"worker exited 0 in {stopped_s:.1f} s; in-flight turns answered before exit; rest after restart",
        result,
        stopped_s,
    )
    result.assert_exactly_once(in_order=True)
    # the turns finished before the exit were committed: the new worker did not redo their LLM calls
    assert repeated_llm_calls <= 0, f"{repeated_llm_calls} finished turns were generated again after the restart"
