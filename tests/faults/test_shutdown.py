"""SIGTERM with turns in flight: answer them, commit, exit 0; a restart repeats nothing that was finished.

What was in flight is taken from the scripted LLM's request log (each question carries its message
id): the turns whose LLM call had started and not ended when SIGTERM was sent. "Answered before
exit" is read from Kafka after the worker exited and before anything restarts: each of them has its
reply on ``chat.outbound`` (the worker drains its stages in pipeline order, so validate keeps going
until the turns the earlier stages finished are answered), and no LLM call the worker started was
abandoned. More turns are sent while no worker runs, so the restart has work of its own. "Repeats
nothing" is counted per message id: every turn made exactly one LLM call over both worker lives
(a dropped or uncommitted turn would be generated again); a turn the knowledge base does not cover
(``ChatTurn.answerable`` false on its chat.generated record) is declined without an LLM call, so
it must make none.
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

GRACE_S = 30.0  # the turns of the stopped pipeline take ~10 s at 2 s per LLM call, on a shared machine


def generated_turns(settings) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    """message_id -> answerable, of every record on chat.generated (offset 0 to the high watermark)."""
    codec = make_codec(settings)
    turns: dict[str, bool] = {}
    for m in read_topic(settings, settings.topics.generated):
        turn = codec.decode(m.value(), ChatTurn)
        turns[turn.request.message_id] = turns.get(turn.request.message_id, False) or turn.answerable
    return turns


def llm_calls_expected(run: "Shutdown") -> dict[str, int]:
    """One LLM call per turn the knowledge base covers, none for a turn it declines."""
    return {r.message_id: 1 if run.answerable[r.message_id] else 0 for r in run.requests}


@dataclass
class Shutdown:
    """What a SIGTERM run left behind, read from the LLM log, Kafka and the final audit."""

    requests: list
    in_flight: set[str]
    generated: set[str]
    answerable: dict[str, bool]  # every turn's, read from chat.generated after the audit
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
    # and they were answered: their replies are on chat.outbound now, with no worker running
    generated = set(await asyncio.to_thread(generated_turns, settings))
    answered = {reply.message_id for reply in await asyncio.to_thread(read_outbound, settings)}
    unanswered = in_flight - answered
    assert not unanswered, (
        f"{len(unanswered)} of {len(in_flight)} turns in flight at SIGTERM were not answered before exit: "
        f"{sorted(unanswered)[:3]} ({len(unanswered & generated)} of them generated)"
    )

    # turns that arrive while no worker runs: the restart must answer them (and redo nothing)
    later = conversation(sessions=10, turns_per_session=2)
    await send_all(client, later)
    requests = requests + later
    workers.start(settings)
    result = await audit_when_done(client, requests, timeout_s=120)
    report(
        f"SIGTERM with {len(in_flight)} LLM calls in flight",
        f"worker exited 0 in {stopped_s:.1f} s; the {len(in_flight)} turns in the LLM were answered before exit; "
        f"{len(answered)} answered before exit, {len(requests) - len(answered)} after restart",
        result,
        stopped_s,
    )
    result.assert_clean()
    answerable = await asyncio.to_thread(generated_turns, settings)
    assert set(answerable) == {r.message_id for r in requests}, "every turn was generated"
    return Shutdown(requests, in_flight, generated, answerable, answered, sigterm_at, exited_at, result)


async def test_sigterm_finishes_in_flight_turns_then_restart_answers_the_rest_once(fault_stack, llm, workers, client_for) -> None:
    """Exit 0 within the grace, no LLM call abandoned, in-flight turns finished, every turn answered once."""
    run = await sigterm_mid_stream(fault_stack, llm, workers, client_for)
    calls = llm.log.per_message()
    sent = {r.message_id for r in run.requests}
    expected = llm_calls_expected(run)
    never = [mid for mid in sent if expected[mid] and calls[mid] == 0]
    assert not never, f"{len(never)} covered turns were answered without an LLM call: {never[:3]}"
    declined = [mid for mid in sent if not expected[mid] and calls[mid]]
    assert not declined, f"{len(declined)} turns the knowledge base does not cover made LLM calls: {declined[:3]}"
    assert set(calls) <= sent, f"LLM calls for turns nobody sent: {set(calls) - sent}"


async def test_sigterm_then_restart_generates_each_turn_exactly_once(fault_stack, llm, workers, client_for) -> None:
    """Per message id, not a net total: a turn finished before the exit is not generated again after it."""
    run = await sigterm_mid_stream(fault_stack, llm, workers, client_for)
    calls = llm.log.per_message()
    expected = llm_calls_expected(run)
    assert sum(expected.values()) > len(expected) // 2, "most turns are covered (the LLM is what a redo would repeat)"
    wrong = {mid: calls[mid] for mid, n in expected.items() if calls[mid] != n}
    assert not wrong, f"{len(wrong)} turns did not make exactly the expected LLM calls (1, or 0 when declined): " + "; ".join(
        f"{mid}: {n} calls (expected {expected[mid]}), {llm.log.describe(mid, run.sigterm_at, run.exited_at)}"
        f"{', generated before exit' if mid in run.generated else ''}{', answered before exit' if mid in run.answered else ''}"
        for mid, n in list(wrong.items())[:5]
    )
