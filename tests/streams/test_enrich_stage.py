"""The enrich stage against the real Redis: one round trip and one Redis span per batch of turns.

The stage's admission (repeat, rate limit) and enrichment is one script per turn, evaluated for the
turns in flight in one pipeline; what each outcome produces and writes is checked here, the
script's own outcomes in ``tests/processors/test_session.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import processors.session as session_module
from processors.records import ChatRequest, ChatResponse, ChatTurn, Status, now_ms
from processors.session import session_store_from_settings
from streams.bench.enrich_micro import CountingConnection
from streams.config import Settings
from streams.message import InboundMessage
from streams.stages.enrich import EnrichStage

pytestmark = pytest.mark.stack


class _Ready:
    async def ready(self) -> None:
        return None


@pytest.fixture
async def stage(monkeypatch):
    """An enrich stage on the real Redis (db 15, its own key prefix), spans into memory."""
    base = Settings()
    parts = urlsplit(base.redis_connection_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/15", parts.query, ""))
    settings = base.derive(topic_prefix=f"enrich-{uuid.uuid4().hex[:8]}.", rate_limit_per_minute=60.0,
                           rate_limit_burst=2, otlp_endpoint="")
    client = aioredis.Redis.from_url(url, connection_class=CountingConnection)
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(session_module, "tracer", provider.get_tracer("chatstream.session"))
    s = EnrichStage(settings)
    s.sessions = session_store_from_settings(client, settings)
    s.markers = _Ready()  # type: ignore[assignment]
    s.test_tracer = provider.get_tracer("tests")  # type: ignore[attr-defined]
    s.test_spans = exporter  # type: ignore[attr-defined]
    yield s
    keys = [k async for k in client.scan_iter(match=f"{s.sessions.prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _request(text: str, session: str, user: str = "u1") -> ChatRequest:
    return ChatRequest(message_id=uuid.uuid4().hex, session_id=session, user_id=user, channel="web", text=text,
                       sent_at=now_ms())


async def _process(stage: EnrichStage, request: ChatRequest):  # type: ignore[no-untyped-def]
    """What the stage runner does around ``process``: a consumer span per turn, current while it runs."""
    msg = InboundMessage(stage.topics.inbound, 0, 0, request.session_id.encode(), b"")
    tracer = stage.test_tracer  # type: ignore[attr-defined]
    with tracer.start_as_current_span(f"{stage.topics.inbound} process", kind=SpanKind.CONSUMER) as span:
        return await stage.process(request, msg, span)


async def test_turns_in_flight_take_one_round_trip_and_one_redis_span_each(stage) -> None:
    first = [_request(f"first {i}", f"web:s{i}", f"user{i}") for i in range(8)]
    for r in first:
        await _process(stage, r)
    stage.test_spans.clear()
    second = [_request(f"second {i}", f"web:s{i}", f"user{i}") for i in range(8)]
    writes = CountingConnection.writes
    outputs = await asyncio.gather(*(_process(stage, r) for r in second))
    assert CountingConnection.writes - writes == 1, "eight turns, one Redis round trip"
    for r, (out,) in zip(second, outputs):
        assert out.topic == stage.topics.enriched and out.key == r.session_id
        assert isinstance(out.record, ChatTurn) and out.record.request is r
        assert [h.text for h in out.record.history] == [r.text.replace("second", "first")]
    spans = stage.test_spans.get_finished_spans()
    process = {s.context.span_id: s for s in spans if s.name.endswith(" process")}
    redis_spans = [s for s in spans if s.name.startswith("redis ")]
    assert [s.name for s in redis_spans] == ["redis session.admit"] * 8
    assert {s.parent.span_id for s in redis_spans} == set(process), "one under each turn's process span"
    assert all(s.attributes["db.system"] == "redis" and s.attributes["chatstream.admission"] == "admitted"
               for s in redis_spans)


async def test_a_repeat_of_a_replied_message_is_dropped_and_not_appended_again(stage) -> None:
    r = _request("How do I export?", "web:rep")
    (out,) = await _process(stage, r)
    await stage.sessions.mark_replied([r.message_id])  # validate answered it
    assert await _process(stage, r) == []
    turns_key = stage.sessions._session_keys(r.session_id)[0]
    assert await stage.sessions.redis.llen(turns_key) == 1
    events = [e.name for s in stage.test_spans.get_finished_spans() if s.name.endswith(" process") for e in s.events]
    assert "duplicate message_id dropped" in events


async def test_a_rate_limited_turn_gets_its_reply_and_is_not_appended(stage) -> None:
    reqs = [_request(f"q{i}", "web:busy", "busy-user") for i in range(3)]  # burst 2
    outputs = [await _process(stage, r) for r in reqs]
    assert [o.topic for (o,) in outputs] == [stage.topics.enriched] * 2 + [stage.topics.outbound]
    limited = outputs[2][0].record
    assert isinstance(limited, ChatResponse) and limited.status == Status.RATE_LIMITED
    assert "Please wait" in limited.text and limited.message_id == reqs[2].message_id
    assert reqs[2].message_id in stage._claims, "the reply is claimed before it is produced"
    turns_key, _meta, ids_key = stage.sessions._session_keys("web:busy")
    texts = [session_module._history_turn(x).text for x in await stage.sessions.redis.lrange(turns_key, 0, -1)]
    assert texts == ["q0", "q1"]
    assert not await stage.sessions.redis.sismember(ids_key, f"u:{reqs[2].message_id}")
    await stage.after_emit(reqs[2], outputs[2])  # produced: marked
    assert await _process(stage, reqs[2]) == [], "redelivered after its reply: no second reply"


async def test_a_rejected_message_gets_its_reply_spends_no_token_and_is_not_appended(stage) -> None:
    r = _request("   ", "web:empty", "quiet-user")
    (out,) = await _process(stage, r)
    assert out.topic == stage.topics.outbound and out.record.status == Status.REJECTED
    assert not await stage.sessions.redis.exists(*stage.sessions._session_keys(r.session_id))
    assert not await stage.sessions.redis.exists(stage.sessions._bucket_key("quiet-user"))
    await stage.after_emit(r, [out])
    assert await _process(stage, r) == [], "a repeat after the reply is dropped at the claim"
