"""SIGTERM with turns in flight: finish them, commit, exit 0; a restart repeats nothing that was finished.

What was in flight is taken from the scripted LLM's request log (each question carries its message
id): the turns whose LLM call had started and not ended when SIGTERM was sent. "Finished before
exit" is read from Kafka after the worker exited and before anything restarts: each of them has its
generate output on ``chat.generated`` (the stage finished it; validate is paused at SIGTERM, so the
reply itself comes after the restart), and no LLM call the worker started was abandoned. "Repeats
nothing" is counted per message id: every turn made exactly one LLM call over both worker lives
(a dropped or uncommitted turn would be generated again) — which today's worker does not meet, see
the xfail below.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from processors.records import ChatTurn
from streams.codec import make_codec
from streams.topic_reader import read_topic
from tests.audit import AuditResult, audit_when_done, read_outbound
from tests.faults.conftest import pipeline_settings
from tests.faults.outcomes import conversation, report, send_all, wait_count

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

GRACE_S = 15.0


def generated_ids(settings) -> list[str]:  # type: ignore[no-untyped-def]
    """message_ids of every record on chat.generated, offset 0 to the high watermark."""
    codec = make_codec(settings)
    return [codec.decode(m.value(), ChatTurn).request.message_id for m in read_topic(settings, settings.topics.generated)]


@dataclass
class Shutdown:
    """What a SIGTERM run left behind, read from the LLM log, Kafka and the final audit."""

    requests: list
    in_flight: set[str]
    generated: set[str]
    answered: set[str]
    sigterm_at: float
    exited_at: float
    result: AuditResult


async def sigterm_mid_stream(fault_stack, llm, workers, client_for) -> Shutdown:  # type: ignore[no-untyped-def]
    """120 turns, SIGTERM with some in the LLM, checks of the exit, a restart, the end-of-test audit."""
    # longer than the 1 s the agents still wait after a quiesce: only the quiesce drain finishes these
    llm.script(latency_ms=2000)
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
    report(
        f"SIGTERM with {len(in_flight)} LLM calls in flight",
        f"worker exited 0 in {stopped_s:.1f} s; the {len(in_flight)} turns in the LLM finished their stage before exit; "
        f"{len(answered)} answered before exit, {len(requests) - len(answered)} after restart",
        result,
        stopped_s,
    )
    result.assert_clean()
    return Shutdown(requests, in_flight, generated, answered, sigterm_at, exited_at, result)


async def test_sigterm_finishes_in_flight_turns_then_restart_answers_the_rest_once(fault_stack, llm, workers, client_for) -> None:
    """Exit 0 within the grace, no LLM call abandoned, in-flight turns finished, every turn answered once."""
    run = await sigterm_mid_stream(fault_stack, llm, workers, client_for)
    calls = llm.log.per_message()
    sent = {r.message_id for r in run.requests}
    never = [mid for mid in sent if calls[mid] == 0]
    assert not never, f"{len(never)} turns were answered without an LLM call: {never[:3]}"
    assert set(calls) <= sent, f"LLM calls for turns nobody sent: {set(calls) - sent}"


@pytest.mark.xfail(
    strict=True,
    reason="the worker's shutdown redoes finished work: a turn not started at SIGTERM is skipped unacked, and the "
    "ordered acks of its partition then hold back the commit of later turns that did finish (streams/inflight.py "
    "still_wanted + streams/app.py quiesce), so after the restart retrieve/generate run them again (issue 15 note)",
)
async def test_sigterm_then_restart_generates_each_turn_exactly_once(fault_stack, llm, workers, client_for) -> None:
    """Per message id, not a net total: a turn finished before the exit is not generated again after it."""
    run = await sigterm_mid_stream(fault_stack, llm, workers, client_for)
    calls = llm.log.per_message()
    wrong = {r.message_id: calls[r.message_id] for r in run.requests if calls[r.message_id] != 1}
    assert not wrong, f"{len(wrong)} turns did not make exactly one LLM call: " + "; ".join(
        f"{mid}: {n} calls, {llm.log.describe(mid, run.sigterm_at, run.exited_at)}"
        f"{', generated before exit' if mid in run.generated else ''}{', answered before exit' if mid in run.answered else ''}"
        for mid, n in list(wrong.items())[:5]
    )
