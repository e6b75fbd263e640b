"""The edges on the real local Kafka and Redis: gateway -> chat.inbound, 503 without Kafka,
deliver chat.outbound -> a Slack API stand-in, escalations -> a ticketing stand-in."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis
from connector_fakes import Recorder
from stack_helpers import produce, read_all, stack_settings, wait_for
from starlette.testclient import TestClient
from test_gateway_slack import SECRET, event, signed

from connectors.consume import make_consumer, run_edge
from connectors.delivery.deliver import Deliverer, build_clients, delivered_key
from connectors.gateway.app import create_app
from connectors.sinks.escalations import EscalationSink, ticketed_key
from connectors.sinks.webhook import Webhook
from processors.records import ChatEscalation, ChatRequest, ChatResponse, DeadLetter, HistoryTurn, Status
from streams.codec import make_codec
from streams.producer import AsyncProducer

pytestmark = pytest.mark.stack


def test_gateway_publishes_a_signed_slack_event_to_chat_inbound():
    s = stack_settings(slack_signing_secret=SECRET, gateway_sse_enabled=False)
    app = create_app(s)  # the real AsyncProducer, acks=all + idempotence
    with TestClient(app) as client:
        body, headers = signed(event(event_id=f"Ev{uuid.uuid4().hex[:6]}"))
        r = client.post("/slack/events", content=body, headers=headers)
    assert r.status_code == 200
    records = read_all(s, s.topics.inbound, 1)
    assert len(records) == 1
    msg = records[0]
    assert msg.key() == b"slack:T001:D042:1700000000.000100"
    req = make_codec(s).decode(msg.value(), ChatRequest)
    assert req.channel == "slack" and req.text == "How do I reset my password?"
    assert req.metadata["slack_channel"] == "D042"
    names = [k for k, _ in msg.headers()]
    assert names.count("traceparent") == 1
    assert dict(msg.headers())["message_id"].decode() == req.message_id


def test_kafka_unreachable_gives_503_and_the_retry_is_not_lost():
    down = stack_settings(slack_signing_secret=SECRET, gateway_sse_enabled=False, gateway_publish_timeout_s=1.5)
    dead = down.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    event_id = f"Ev{uuid.uuid4().hex[:6]}"
    with TestClient(create_app(dead)) as client:
        body, headers = signed(event(event_id=event_id))
        started = time.monotonic()
        r = client.post("/slack/events", content=body, headers=headers)
        elapsed = time.monotonic() - started
    assert r.status_code == 503 and r.headers["retry-after"]
    assert elapsed < 5
    # Slack retries the same event; with Kafka reachable it lands exactly once.
    with TestClient(create_app(down)) as client:
        body, headers = signed(event(event_id=event_id), retry=1)
        assert client.post("/slack/events", content=body, headers=headers).status_code == 200
    records = read_all(down, down.topics.inbound, 1, settle_s=1.5)
    assert len(records) == 1
    assert make_codec(down).decode(records[0].value(), ChatRequest).metadata["slack_event_id"] == event_id


async def test_deliver_posts_to_slack_once_honouring_retry_after(recorder_factory):
    slack = recorder_factory([
        (429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}),
        (200, {}, {"ok": True, "channel": "D042", "ts": "1700000100.000200"}),
    ])
    s = stack_settings(slack_api_url=slack.url, slack_bot_token="xoxb-test-token",
                       deliver_group=f"deliver-{uuid.uuid4().hex[:6]}")
    codec = make_codec(s)
    req = ChatRequest(f"m-{uuid.uuid4().hex}", "slack:T001:D042:1700000000.000100", "slack:T001:U1", "slack",
                      "How do I reset my password?", int(time.time() * 1000),
                      {"slack_channel": "D042", "slack_thread_ts": "1700000000.000100"})
    value = codec.encode(ChatResponse.for_request(req, "Use Settings > Security.", Status.ANSWERED))
    for _ in range(2):  # the same reply read twice
        produce(s, s.topics.outbound, req.session_id, value)

    import httpx

    redis = aioredis.from_url(s.redis_connection_url)
    await redis.delete(delivered_key(req.message_id))
    producer = AsyncProducer(s.kafka_bootstrap)
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=5) as http:
        deliverer = Deliverer(s, build_clients(s, http), redis, producer, codec)
        consumer = make_consumer(s, s.deliver_group)
        task = asyncio.create_task(run_edge(consumer, deliverer.lane(), stop))
        try:
            await wait_for(lambda: deliverer.counts.get("delivered", 0) + deliverer.counts.get("duplicate", 0) >= 2,
                           40, "both copies handled")
        finally:
            stop.set()
            await task
    await producer.close(5)
    assert deliverer.counts == {"retried": 1, "delivered": 1, "duplicate": 1}
    assert len(slack.requests) == 2  # the 429, then the one successful post
    posted = slack.requests[1]
    assert posted["path"] == "/chat.postMessage"
    assert posted["headers"]["Authorization"] == "Bearer xoxb-test-token"
    assert posted["body"]["channel"] == "D042" and posted["body"]["thread_ts"] == "1700000000.000100"
    assert posted["body"]["text"].startswith("Use Settings > Security.")
    assert slack.times[1] - slack.times[0] >= 0.9  # Retry-After honoured
    assert await redis.exists(delivered_key(req.message_id)) == 1
    assert await redis.get(f"slack_reply:D042:1700000100.000200") is not None
    await redis.aclose()


async def test_deliver_dead_letters_a_permanent_failure(recorder_factory):
    slack = recorder_factory([(200, {}, {"ok": False, "error": "channel_not_found"})])
    s = stack_settings(slack_api_url=slack.url, slack_bot_token="xoxb-test-token",
                       deliver_group=f"deliver-{uuid.uuid4().hex[:6]}")
    codec = make_codec(s)
    req = ChatRequest(f"m-{uuid.uuid4().hex}", "slack:T1:CX:1.0", "u", "slack", "q", 0,
                      {"slack_channel": "CX", "slack_thread_ts": "1.0"})
    produce(s, s.topics.outbound, req.session_id, codec.encode(ChatResponse.for_request(req, "a", Status.ANSWERED)))
    import httpx

    redis = aioredis.from_url(s.redis_connection_url)
    producer = AsyncProducer(s.kafka_bootstrap)
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=5) as http:
        deliverer = Deliverer(s, build_clients(s, http), redis, producer, codec)
        task = asyncio.create_task(run_edge(make_consumer(s, s.deliver_group), deliverer.lane(), stop))
        try:
            await wait_for(lambda: deliverer.counts.get("dead_lettered", 0) >= 1, 30, "dead letter")
        finally:
            stop.set()
            await task
    await producer.close(5)
    await redis.aclose()
    assert len(slack.requests) == 1  # permanent: not retried
    letters = read_all(s, s.topics.deadletter, 1)
    letter = codec.decode(letters[0].value(), DeadLetter)
    assert letter.stage == "deliver" and letter.message_id == req.message_id
    assert "channel_not_found" in letter.error_message
    assert letter.topic == s.topics.outbound


async def test_escalation_sink_creates_one_ticket_even_when_produced_twice(recorder_factory):
    tickets = recorder_factory([(201, {}, {"ticket": {"id": 1}})])
    s = stack_settings()
    codec = make_codec(s)
    esc = ChatEscalation(
        message_id=f"m-{uuid.uuid4().hex}", session_id="web:acme:s1", user_id="u-1", channel="web",
        reason="user asked for a human",
        transcript=[HistoryTurn("user", "I want a refund", "m0", 1700000000000),
                    HistoryTurn("assistant", "Let me get a colleague.", "m0", 1700000001000)],
    )
    for _ in range(2):
        produce(s, s.topics.escalations, esc.session_id, codec.encode(esc))
    import httpx

    redis = aioredis.from_url(s.redis_connection_url)
    await redis.delete(ticketed_key(esc.message_id))
    producer = AsyncProducer(s.kafka_bootstrap)
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=5) as http:
        sink = EscalationSink(s, Webhook(s, tickets.url + "/api/v2/tickets", http), redis, producer, codec, "zendesk")
        task = asyncio.create_task(run_edge(make_consumer(s, f"esc-{uuid.uuid4().hex[:6]}"), sink.lane(), stop))
        try:
            await wait_for(lambda: sum(sink.counts.values()) >= 2, 30, "both escalations handled")
        finally:
            stop.set()
            await task
    await producer.close(5)
    await redis.aclose()
    assert sink.counts == {"ticketed": 1, "duplicate": 1}
    assert len(tickets.requests) == 1
    sent = tickets.requests[0]
    assert sent["headers"]["Idempotency-Key"] == esc.message_id
    ticket = sent["body"]["ticket"]
    assert ticket["external_id"] == esc.message_id
    assert ticket["subject"] == "[web] I want a refund"
    assert "user: I want a refund" in ticket["comment"]["body"]
    assert "chatstream" in ticket["tags"] and ticket["requester"]["name"] == "u-1"


async def test_slack_question_in_answer_posted_back_to_the_same_thread(recorder_factory):
    """Gateway -> chat.inbound -> (pipeline stand-in) -> chat.outbound -> deliver -> Slack API stand-in."""
    import threading

    import httpx
    from stack_helpers import fake_pipeline

    slack = recorder_factory([(200, {}, {"ok": True, "channel": "C777", "ts": "1700000300.000900"})])
    s = stack_settings(slack_signing_secret=SECRET, slack_bot_token="xoxb-e2e", slack_api_url=slack.url,
                       gateway_sse_enabled=False, deliver_group=f"deliver-{uuid.uuid4().hex[:6]}")
    stop_pipeline = threading.Event()
    answered: list = []
    pipeline = threading.Thread(target=fake_pipeline, args=(s, stop_pipeline, answered), daemon=True)
    pipeline.start()
    redis = aioredis.from_url(s.redis_connection_url)
    producer = AsyncProducer(s.kafka_bootstrap)
    stop = asyncio.Event()
    try:
        with TestClient(create_app(s)) as client:
            payload = event("<@UBOT> how do I reset my password?", kind="app_mention", channel="C777",
                            ts=f"{int(time.time())}.000100", thread_ts="1700000000.000500", channel_type=None,
                            event_id=f"Ev{uuid.uuid4().hex[:6]}")
            body, headers = signed(payload)
            assert client.post("/slack/events", content=body, headers=headers).status_code == 200
        async with httpx.AsyncClient(timeout=5) as http:
            deliverer = Deliverer(s, build_clients(s, http), redis, producer, make_codec(s))
            task = asyncio.create_task(run_edge(make_consumer(s, s.deliver_group), deliverer.lane(), stop))
            try:
                await wait_for(lambda: deliverer.counts.get("delivered", 0) >= 1, 40, "the reply delivered")
            finally:
                stop.set()
                await task
    finally:
        stop_pipeline.set()
        pipeline.join(10)
        await producer.close(5)
        await redis.aclose()
    assert len(slack.requests) == 1
    posted = slack.requests[0]["body"]
    assert posted["channel"] == "C777" and posted["thread_ts"] == "1700000000.000500"
    assert "you asked: how do I reset my password?" in posted["text"]
    assert "<https://help.example/reset|Resetting your password>" in posted["text"]
    assert answered[0].session_id == "slack:T001:C777:1700000000.000500"


async def test_two_escalation_sink_instances_share_the_work_one_ticket_each(recorder_factory):
    import httpx

    tickets = recorder_factory([(201, {}, {"ticket": {"id": 1}})])
    s = stack_settings()
    codec = make_codec(s)
    # the 12 session keys land on 5 of the 6 partitions, so each half of the group gets some of them
    escalations = [ChatEscalation(f"m-{uuid.uuid4().hex}", f"web:acme:s{i}", "u", "web", "human please")
                   for i in range(12)]
    group = f"esc-{uuid.uuid4().hex[:6]}"
    redis = aioredis.from_url(s.redis_connection_url)
    producer = AsyncProducer(s.kafka_bootstrap)
    stop = asyncio.Event()

    def shared() -> bool:  # each instance's partitions now, as its lane owns them
        assigned = [{p for p in range(s.partitions) if lane.owns((s.topics.escalations, p))} for lane in lanes]
        both = all(assigned) and not (assigned[0] & assigned[1])
        return both and len(assigned[0] | assigned[1]) == s.partitions

    async with httpx.AsyncClient(timeout=5) as http:
        sinks = [EscalationSink(s, Webhook(s, tickets.url, http), redis, producer, codec) for _ in range(2)]
        lanes = [sink.lane() for sink in sinks]
        tasks = [asyncio.create_task(run_edge(make_consumer(s, group), lane, stop)) for lane in lanes]
        try:
            # both instances own partitions before the work arrives, so the group really shares it
            await wait_for(shared, 60, "both sinks assigned")
            for esc in escalations:
                produce(s, s.topics.escalations, esc.session_id, codec.encode(esc))
            await wait_for(lambda: sum(sum(k.counts.values()) for k in sinks) >= 12, 60, "all escalations handled")
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    await producer.close(5)
    await redis.aclose()
    keys = sorted(r["headers"]["Idempotency-Key"] for r in tickets.requests)
    assert keys == sorted(e.message_id for e in escalations)  # each exactly once
    assert sum(k.counts.get("ticketed", 0) for k in sinks) == 12
    assert all(k.counts.get("ticketed", 0) for k in sinks), f"one instance did all the work: {[k.counts for k in sinks]}"


def committed_total(s, group: str) -> int:  # type: ignore[no-untyped-def]
    """Sum of the group's committed offsets over chat.inbound and chat.outbound."""
    from confluent_kafka import Consumer, TopicPartition

    check = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": group})
    try:
        committed = check.committed([TopicPartition(t, p) for t in (s.topics.inbound, s.topics.outbound)
                                     for p in range(s.partitions)], timeout=10)
    finally:
        check.close()
    return sum(max(tp.offset, 0) for tp in committed)


async def test_transcript_sink_pushes_an_idle_session_and_commits(recorder_factory):
    import httpx

    from connectors.sinks.transcripts import TranscriptSink

    crm = recorder_factory([(200, {}, {"ok": True})])
    s = stack_settings(transcript_idle_s=1.0)
    codec = make_codec(s)
    sid = f"web:acme:{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    req = ChatRequest(f"m-{uuid.uuid4().hex}", sid, "u-1", "web", "Where is my invoice?", now, {}, "acme")
    produce(s, s.topics.inbound, sid, codec.encode(req))
    produce(s, s.topics.outbound, sid, codec.encode(ChatResponse.for_request(req, "Under Billing.", Status.ANSWERED)))
    group = f"tr-{uuid.uuid4().hex[:6]}"
    producer = AsyncProducer(s.kafka_bootstrap)
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=5) as http:
        sink = TranscriptSink(s, Webhook(s, crm.url, http), producer, codec)
        consumer = make_consumer(s, group, **{"partition.assignment.strategy": "range"})
        task = asyncio.create_task(run_edge(consumer, sink.lane(), stop, tick=sink.flush_locked))
        try:
            await wait_for(lambda: sink.counts.get("pushed", 0) >= 1, 40, "transcript pushed")
            # committed past both records: a restarted instance would not push the session again
            await wait_for(lambda: committed_total(s, group) == 2, 20, "offsets of both records committed")
        finally:
            stop.set()
            await task
    await producer.close(5)
    assert len(crm.requests) == 1
    body = crm.requests[0]["body"]
    assert body["session_id"] == sid
    assert [(m["role"], m["text"]) for m in body["messages"]] == [("user", "Where is my invoice?"),
                                                                 ("assistant", "Under Billing.")]
    assert committed_total(s, group) == 2
