"""Turns in the way a channel sends them, answers out: the whole pipeline on the real stack."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from processors.records import ChatRequest, ChatResponse, DeadLetter, Status
from streams.client import ChatClient
from streams.pipeline import TIMING_KEYS
from streams.topic_reader import read_topic
from tests.audit import audit_when_done
from tests.e2e.turns import new_request

pytestmark = pytest.mark.stack


def session() -> str:
    return f"web:{uuid.uuid4().hex[:10]}"


async def audited(client: ChatClient, sent: list[ChatRequest], **kw) -> None:  # type: ignore[no-untyped-def]
    """The end-of-test audit on the module's namespace (shared by its tests, so other ids are allowed)."""
    result = await audit_when_done(client, sent, only_sent=False, **kw)
    result.assert_clean()


async def test_grounded_answer_with_citations(client: ChatClient) -> None:
    request = new_request("How do I reset my password?", session(), channel="web")
    reply = await client.ask(request, timeout_s=60)
    assert reply.status in (Status.ANSWERED, Status.FALLBACK), reply
    assert reply.citations, "a grounded answer cites its passages"
    assert any("password" in c.title.lower() or "password" in c.source.lower() for c in reply.citations), reply.citations
    assert reply.text.strip()
    assert reply.model
    assert reply.latency_ms > 0
    assert set(reply.stage_ms) >= set(TIMING_KEYS)  # every stage and the LLM call
    await audited(client, [request])


async def test_follow_up_uses_the_history(client: ChatClient) -> None:
    sid, user = session(), f"u-{uuid.uuid4().hex[:8]}"
    first_turn = new_request("How do I connect Slack?", sid, user_id=user)
    first = await client.ask(first_turn, 60)
    topic_docs = {c.doc_id for c in first.citations}
    assert "slack-integration" in topic_docs, first.citations
    follow_up = "And how do I turn it off?"
    # control: the same follow-up without a history names nothing about Slack
    control_turn = new_request(follow_up, session(), user_id=user)
    control = await client.ask(control_turn, 60)
    assert not {c.doc_id for c in control.citations} & topic_docs, control.citations
    # with the history, retrieval stays on the previous topic
    follow_turn = new_request(follow_up, sid, user_id=user)
    follow = await client.ask(follow_turn, 60)
    assert follow.status in (Status.ANSWERED, Status.FALLBACK, Status.ESCALATED)
    assert {c.doc_id for c in follow.citations} & topic_docs, follow.citations
    await audited(client, [first_turn, control_turn, follow_turn])


async def test_rate_limit_replies_instead_of_silence(client: ChatClient, settings) -> None:
    sid, user = session(), f"u-{uuid.uuid4().hex[:6]}"
    requests = [new_request(f"question number {i} about invoices", sid, user_id=user) for i in range(settings.rate_limit_burst + 4)]
    for r in requests:
        await client.send(r)
    replies = [await client.wait_reply(r.message_id, 90) for r in requests]
    statuses = [r.status for r in replies]
    assert statuses.count(Status.RATE_LIMITED) >= 4, statuses
    assert all("wait" in r.text for r in replies if r.status is Status.RATE_LIMITED)
    await audited(client, requests)  # rate-limited turns are answered once and kept out of the history


async def test_same_message_id_twice_gives_one_reply(client: ChatClient) -> None:
    request = new_request("What are your support hours?", session())
    await client.send(request)
    await client.send(request)
    # read back once both copies are processed and committed: one reply, one user turn in the history
    await audited(client, [request, request])


async def test_bad_input_is_dead_lettered_or_rejected_and_pipeline_keeps_going(client: ChatClient, settings) -> None:
    sid = session()
    await client.send_raw(b"\x00\x01 definitely not avro", key=sid)
    await client.send_raw(client.codec.encode(ChatResponse.for_request(new_request("x", sid), "x", Status.ANSWERED)), key=sid)
    await client.send_raw(client.codec.encode(new_request("truncated", sid))[:-4], key=sid)
    unknown_channel = new_request("hello from fax", sid, channel="fax")
    await client.send(unknown_channel)
    empty = new_request("   ", sid)
    huge = new_request("a" * 1_000_000, sid)
    good = new_request("How do I enable two-factor authentication?", sid)
    for r in (empty, huge, good):
        await client.send(r)
    assert (await client.wait_reply(empty.message_id, 60)).status is Status.REJECTED
    huge_reply = await client.wait_reply(huge.message_id, 60)
    assert huge_reply.status is Status.REJECTED and "limit" in huge_reply.text
    assert (await client.wait_reply(good.message_id, 60)).status in (Status.ANSWERED, Status.FALLBACK)
    await audited(client, [unknown_channel, empty, huge, good], no_reply=[unknown_channel.message_id])
    # the group has committed chat.inbound to its end, so every dead letter is on the topic now
    records = await asyncio.to_thread(lambda: list(read_topic(settings, settings.topics.deadletter)))
    letters = [letter for m in records if (letter := client.codec.decode(m.value(), DeadLetter)).key == sid.encode()]
    reasons = sorted(l.error_message for l in letters)
    assert len(letters) == 4, reasons
    assert all(l.stage == "enrich" and l.topic == settings.topics.inbound for l in letters)
    assert any("not Avro single-object" in r for r in reasons)
    assert any("expected ChatRequest" in r for r in reasons)
    assert any("cannot read ChatRequest" in r for r in reasons)
    assert any("unknown channel 'fax'" in r for r in reasons)
    assert any(l.value == b"\x00\x01 definitely not avro" for l in letters), "original bytes are kept"


async def test_many_turns_in_flight_keep_session_order(client: ChatClient, llm) -> None:
    llm.script(latency_ms=500)
    try:
        sessions = [session() for _ in range(20)]
        requests: list[ChatRequest] = []
        for turn in range(10):
            for i, sid in enumerate(sessions):
                requests.append(new_request(f"turn {turn}: how do I export my data?", sid, user_id=f"order-{sid}"))
        started = time.monotonic()
        await asyncio.gather(*(client.send(r) for r in requests))
        await asyncio.gather(*(client.wait_reply(r.message_id, 120) for r in requests))
        elapsed = time.monotonic() - started
    finally:
        llm.script(latency_ms=0)
    # 10 turns per session, each >= 500 ms and strictly sequential: ideal 5 s
    assert elapsed < 4 * 10 * 0.5, f"200 turns took {elapsed:.1f} s"
    by_session: dict[str, list[str]] = {}
    for reply in client.reply_order:
        by_session.setdefault(reply.session_id, []).append(reply.message_id)
    for sid in sessions:
        expected = [r.message_id for r in requests if r.session_id == sid]
        assert by_session[sid] == expected, f"replies of {sid} out of order"
    # replies exactly once and in order, and each session's history whole (10 turns > history_turns)
    await audited(client, requests)


async def test_a_burst_of_turns_in_one_session_keeps_the_history_whole(client: ChatClient, llm, settings) -> None:
    """Ten questions at once in one session (history_turns=8): the last 8 messages are u/a pairs in order."""
    llm.script(latency_ms=300)
    try:
        sid, user = session(), f"burst-{uuid.uuid4().hex[:8]}"
        requests = [new_request(f"turn {i}: how do I export my data?", sid, user_id=user) for i in range(10)]
        for r in requests:
            await client.send(r)
        await audited(client, requests)
    finally:
        llm.script(latency_ms=0)
