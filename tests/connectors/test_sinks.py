"""Sinks without Kafka: ticket payloads, webhook retries, transcript grouping and safe offsets."""

from __future__ import annotations

import httpx
from connector_fakes import FakeMessage, FakeProducer, FakeRedis, no_sleep, settings

from connectors.sinks.escalations import EscalationSink, zendesk_payload
from connectors.sinks.transcripts import TranscriptSink
from connectors.sinks.webhook import Webhook
from processors.records import ChatEscalation, ChatRequest, ChatResponse, Citation, DeadLetter, HistoryTurn, Status
from streams.codec import SingleObjectCodec

codec = SingleObjectCodec()


def escalation(message_id="m-9") -> ChatEscalation:
    return ChatEscalation(message_id, "slack:T:C:1.0", "slack:T:U1", "slack", "asked for a human",
                          [HistoryTurn("user", "Cancel my plan", "m-8", 1700000000000)])


def test_zendesk_payload_shape():
    ticket = zendesk_payload(escalation())["ticket"]
    assert set(ticket) >= {"subject", "comment", "requester", "external_id", "tags"}
    assert ticket["external_id"] == "m-9"
    assert ticket["subject"] == "[slack] Cancel my plan"
    assert "asked for a human" in ticket["comment"]["body"] and "user: Cancel my plan" in ticket["comment"]["body"]


async def test_escalation_webhook_retries_then_dead_letters(recorder_factory):
    api = recorder_factory([(500, {}, {"error": "down"})])
    s = settings(sink_max_attempts=3)
    producer = FakeProducer()
    async with httpx.AsyncClient() as http:
        sink = EscalationSink(s, Webhook(s, api.url, http, sleep=no_sleep), FakeRedis(), producer, codec, "generic")
        outcome = await sink.handle(FakeMessage("chat.escalations", codec.encode(escalation()), b"k", 0, 4))
    assert outcome == "dead_lettered"
    assert len(api.requests) == 3
    assert all(r["headers"]["Idempotency-Key"] == "m-9" for r in api.requests)
    letter = codec.decode(producer.sent[0]["value"], DeadLetter)
    assert (letter.stage, letter.offset, letter.message_id) == ("sink.escalations", 4, "m-9")


async def test_escalation_permanent_4xx_is_not_retried(recorder_factory):
    api = recorder_factory([(422, {}, {"error": "invalid"})])
    s = settings()
    async with httpx.AsyncClient() as http:
        sink = EscalationSink(s, Webhook(s, api.url, http, sleep=no_sleep), FakeRedis(), FakeProducer(), codec)
        assert await sink.handle(FakeMessage("chat.escalations", codec.encode(escalation()))) == "dead_lettered"
    assert len(api.requests) == 1


def inbound(mid, sid, text, at, offset, partition=0):
    req = ChatRequest(mid, sid, "u-1", "web", text, at, {}, "acme")
    return req, FakeMessage("chat.inbound", codec.encode(req), sid.encode(), partition, offset)


def outbound(req, text, at, offset, partition=0, status=Status.ANSWERED):
    resp = ChatResponse.for_request(req, text, status, citations=[Citation("kb-1", "Billing", "kb/billing.md", 0.8)])
    resp.created_at = at
    return FakeMessage("chat.outbound", codec.encode(resp), req.session_id.encode(), partition, offset)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def test_transcript_pushed_after_idle_with_turns_citations_statuses(recorder_factory):
    crm = recorder_factory([(200, {}, {"ok": True})])
    s = settings(transcript_idle_s=60)
    clock = Clock(1_700_000_030)
    async with httpx.AsyncClient() as http:
        sink = TranscriptSink(s, Webhook(s, crm.url, http, sleep=no_sleep), FakeProducer(), codec, clock=clock)
        q1, m1 = inbound("m1", "web:acme:a", "Where is my invoice?", 1_700_000_000_000, 0)
        q2, m2 = inbound("m2", "web:acme:a", "And last month?", 1_700_000_010_000, 1)
        qb, mb = inbound("mb", "web:acme:b", "Other session", 1_700_000_020_000, 2)
        await sink.handle_batch([m1, outbound(q1, "Under Billing.", 1_700_000_001_000, 0), m2,
                                 outbound(q2, "Also under Billing.", 1_700_000_011_000, 1, status=Status.FALLBACK), mb])
        # nothing idle yet: offsets held at each partition's oldest open record
        assert await sink.flush_idle() == {("chat.inbound", 0): 0, ("chat.outbound", 0): 0}
        assert crm.requests == []
        clock.t = 1_700_000_075  # session a idle for > 60 s, b not yet
        commits = await sink.flush_idle()
    assert len(crm.requests) == 1
    body = crm.requests[0]["body"]
    assert body["session_id"] == "web:acme:a" and body["turn_count"] == 2
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant"]
    assert body["messages"][1]["citations"][0]["title"] == "Billing"
    assert body["statuses"] == {"ANSWERED": 1, "FALLBACK": 1}
    assert crm.requests[0]["headers"]["Idempotency-Key"] == "transcript:web:acme:a:m2"
    assert commits == {("chat.inbound", 0): 2, ("chat.outbound", 0): 2}  # b's record (offset 2) still open
    assert list(sink.sessions) == ["web:acme:b"]


async def test_transcript_failure_dead_letters_every_record_of_the_session(recorder_factory):
    crm = recorder_factory([(400, {}, {"error": "bad"})])
    s = settings(transcript_idle_s=1)
    producer = FakeProducer()
    async with httpx.AsyncClient() as http:
        sink = TranscriptSink(s, Webhook(s, crm.url, http, sleep=no_sleep), producer, codec, clock=Clock(2e9))
        q, m = inbound("m1", "web:acme:a", "hi", 1_700_000_000_000, 5)
        await sink.handle_batch([m, outbound(q, "hello", 1_700_000_000_500, 9)])
        commits = await sink.flush_idle()
    letters = [codec.decode(p["value"], DeadLetter) for p in producer.sent]
    assert sorted((l.topic, l.offset) for l in letters) == [("chat.inbound", 5), ("chat.outbound", 9)]
    assert commits == {("chat.inbound", 0): 6, ("chat.outbound", 0): 10}


async def test_revoked_partitions_forget_their_sessions():
    from confluent_kafka import TopicPartition

    s = settings()
    sink = TranscriptSink(s, None, FakeProducer(), codec)  # type: ignore[arg-type]
    _, m = inbound("m1", "web:acme:a", "hi", 1_700_000_000_000, 0, partition=3)
    await sink.handle_batch([m])
    sink.revoke([TopicPartition("chat.inbound", 3)])
    assert sink.sessions == {} and sink.safe_offsets() == {}
