"""Turns in the way a channel sends them, answers out: the whole pipeline on the real stack."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from processors.records import ChatRequest, ChatResponse, DeadLetter, Status
from streams.client import ChatClient, TopicTail
from streams.pipeline import TIMING_KEYS
from tests.e2e.turns import new_request

pytestmark = pytest.mark.stack


def session() -> str:
    return f"web:{uuid.uuid4().hex[:10]}"


async def test_grounded_answer_with_citations(client: ChatClient) -> None:
    reply = await client.ask(new_request("How do I reset my password?", session(), channel="web"), timeout_s=60)
    assert reply.status in (Status.ANSWERED, Status.FALLBACK), reply
    assert reply.citations, "a grounded answer cites its passages"
    assert any("password" in c.title.lower() or "password" in c.source.lower() for c in reply.citations), reply.citations
    assert reply.text.strip()
    assert reply.model
    assert reply.latency_ms > 0
    assert set(reply.stage_ms) >= set(TIMING_KEYS)  # every stage and the LLM call


async def test_follow_up_uses_the_history(client: ChatClient) -> None:
    sid, user = session(), f"u-{uuid.uuid4().hex[:8]}"
    first = await client.ask(new_request("How much does the Business plan cost?", sid, user_id=user), 60)
    plan_docs = {c.doc_id for c in first.citations}
    assert plan_docs, first
    follow = await client.ask(new_request("And can I pay for it yearly?", sid, user_id=user), 60)
    assert follow.status in (Status.ANSWERED, Status.FALLBACK, Status.ESCALATED)
    # Without the previous turn the question names no product; with it, retrieval stays on plans/billing.
    assert {c.doc_id for c in follow.citations} & plan_docs or any(
        word in " ".join(c.title.lower() for c in follow.citations) for word in ("plan", "billing", "pricing")
    ), follow.citations


async def test_rate_limit_replies_instead_of_silence(client: ChatClient, settings) -> None:
    sid, user = session(), f"u-{uuid.uuid4().hex[:6]}"
    requests = [new_request(f"question number {i} about invoices", sid, user_id=user) for i in range(settings.rate_limit_burst + 4)]
    for r in requests:
        await client.send(r)
    replies = [await client.wait_reply(r.message_id, 90) for r in requests]
    statuses = [r.status for r in replies]
    assert statuses.count(Status.RATE_LIMITED) >= 4, statuses
    assert all("wait" in r.text for r in replies if r.status is Status.RATE_LIMITED)


async def test_same_message_id_twice_gives_one_reply(client: ChatClient) -> None:
    request = new_request("What are your support hours?", session())
    await client.send(request)
    await client.send(request)
    await client.wait_reply(request.message_id, 60)
    await client.settle(3.0)
    assert len(client.replies[request.message_id]) == 1


async def test_bad_input_is_dead_lettered_or_rejected_and_pipeline_keeps_going(client: ChatClient, settings) -> None:
    letters: list[DeadLetter] = []
    tail = TopicTail(settings, settings.topics.deadletter, lambda b: client.codec.decode(b, DeadLetter), lambda r, m: letters.append(r))
    await asyncio.to_thread(tail.start)
    try:
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
        deadline = time.monotonic() + 30
        while len(letters) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        reasons = sorted(l.error_message for l in letters)
        assert len(letters) == 4, reasons
        assert all(l.stage == "enrich" and l.topic == settings.topics.inbound for l in letters)
        assert any("not Avro single-object" in r for r in reasons)
        assert any("expected ChatRequest" in r for r in reasons)
        assert any("cannot read ChatRequest" in r for r in reasons)
        assert any("unknown channel 'fax'" in r for r in reasons)
        assert any(l.value == b"\x00\x01 definitely not avro" for l in letters), "original bytes are kept"
        assert unknown_channel.message_id not in client.replies
    finally:
        await asyncio.to_thread(tail.stop)


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
