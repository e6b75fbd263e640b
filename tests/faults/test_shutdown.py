"""SIGTERM with turns in flight: finish them, commit, exit 0; a restart repeats nothing that was finished.

What was in flight is taken from the scripted LLM's request log (each question carries its message
id): the turns whose LLM call had started and not ended when SIGTERM was sent. "Finished before
exit" is read from Kafka: after the worker exited and before anything restarts, ``chat.outbound``
must hold a reply to each of them. "Repeats nothing" is counted per message id: every turn made
exactly one LLM call over both worker lives (a dropped or uncommitted turn would be generated again).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from processors.records import ChatTurn
from streams.codec import make_codec
from streams.topic_reader import read_topic
from tests.audit import audit_when_done, read_outbound
from tests.faults.conftest import pipeline_settings
from tests.faults.outcomes import conversation, report, send_all, wait_count

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

GRACE_S = 15.0


def generated_ids(settings) -> list[str]:  # type: ignore[no-untyped-def]
    """message_ids of every record on chat.generated, offset 0 to the high watermark."""
    codec = make_codec(settings)
    return [codec.decode(m.value(), ChatTurn).request.message_id for m in read_topic(settings, settings.topics.generated)]


async def test_sigterm_finishes_in_flight_turns_and_restart_repeats_nothing(fault_stack, llm, workers, client_for) -> None:
    llm.script(latency_ms=800)
    settings = pipeline_settings(fault_stack, llm, shutdown_grace_s=GRACE_S)
    worker = workers.start(settings)
    client = await client_for(settings)
    requests = conversation(sessions=20, turns_per_session=6)
    sent = {r.message_id for r in requests}
    await send_all(client, requests)
    await wait_count(client, requests, 30, timeout_s=60)

    sigterm_at = time.monotonic()
    code = await asyncio.to_thread(worker.terminate, GRACE_S + 30)
    exited_at = time.monotonic()
    stopped_s = exited_at - sigterm_at
    in_flight = llm.log.open_at(sigterm_at)
    assert code == 0, f"exit code {code}:\n{worker.tail(60)}"
    assert stopped_s < GRACE_S + 10, f"shutdown took {stopped_s:.1f} s"
    assert in_flight and in_flight <= sent, f"SIGTERM must arrive with turns in the LLM: {in_flight}"

    # every LLM call the worker started before it exited had ended, successfully, by then
    unfinished = [c for c in llm.log.started_before(exited_at) if c.ended is None or c.ended > exited_at or c.status != 200]
    assert not unfinished, f"{len(unfinished)} LLM calls abandoned by the exiting worker: {unfinished[:3]}"
    # and the stage finished their turns: the generate outputs are on chat.generated now, with no
    # worker running (the validate stage is paused at SIGTERM, so their replies come after the restart)
    generated = set(await asyncio.to_thread(generated_ids, settings))
    dropped = in_flight - generated
    assert not dropped, f"{len(dropped)} of {len(in_flight)} turns in flight at SIGTERM were not finished before exit: {sorted(dropped)[:3]}"
    answered = {reply.message_id for reply in await asyncio.to_thread(read_outbound, settings)}
    assert len(answered) < len(requests), "some turns must be left for the restarted worker"

    workers.start(settings)
    result = await audit_when_done(client, requests, timeout_s=120)
    calls = llm.log.per_message()
    report(
        f"SIGTERM with {len(in_flight)} LLM calls in flight",
        f"worker exited 0 in {stopped_s:.1f} s; the {len(in_flight)} turns in the LLM finished their stage before exit; "
        f"{len(answered)} answered before exit, {len(requests) - len(answered)} after restart",
        result,
        stopped_s,
    )
    result.assert_clean()
    # per message id, not a net total: a turn finished before the exit was not generated again
    # after the restart, and every turn was generated (exactly one call each: the LLM never fails here)
    wrong = {mid: calls[mid] for mid in sent if calls[mid] != 1}
    assert not wrong, f"{len(wrong)} turns did not make exactly one LLM call: " + "; ".join(
        f"{mid}: {n} calls, {llm.log.describe(mid, sigterm_at, exited_at)}"
        f"{', generated before exit' if mid in generated else ''}{', answered before exit' if mid in answered else ''}"
        for mid, n in list(wrong.items())[:5]
    )
    assert set(calls) <= sent, f"LLM calls for turns nobody sent: {set(calls) - sent}"
