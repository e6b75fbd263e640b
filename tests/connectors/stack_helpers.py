"""Helpers for the connector tests that use the real local Kafka and Redis."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer

from streams.config import Settings
from streams.topics import create_topics


_created: list[Settings] = []


def stack_settings(**overrides: Any) -> Settings:
    """Settings in a fresh topic namespace, so tests never see each other's records.

    The ``kafka_namespaces`` fixture (autouse for this folder) deletes the topics afterwards.
    """
    base: dict[str, Any] = {
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}.",
        "otlp_endpoint": None,
        "consumer_group": f"test-{uuid.uuid4().hex[:8]}",
    }
    base.update(overrides)
    s = Settings(**base)
    create_topics(s)
    _created.append(s)
    return s


def delete_created_topics() -> None:
    from confluent_kafka.admin import AdminClient

    while _created:
        s = _created.pop()
        admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
        for future in admin.delete_topics(s.topics.all(), operation_timeout=30).values():
            try:
                future.result()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass


def read_all(settings: Settings, topic: str, count: int, deadline_s: float = 20.0, settle_s: float = 1.0) -> list:
    """At least ``count`` records of a topic from the start, plus whatever arrives within ``settle_s``."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + deadline_s
    settle_until = None
    try:
        while True:
            now = time.monotonic()
            if len(got) >= count and settle_until is None:
                settle_until = now + settle_s
            if settle_until is not None and now > settle_until:
                break
            assert now < deadline, f"only {len(got)} of {count} records on {topic} within {deadline_s}s"
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                got.append(msg)
    finally:
        consumer.close()
    return got


def produce(settings: Settings, topic: str, key: str, value: bytes, headers: list | None = None) -> None:
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    p.produce(topic, value, key=key, headers=headers or [])
    assert p.flush(20) == 0


async def wait_for(predicate, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def fake_pipeline(
    settings: Settings,
    stop: "threading.Event",
    answered: list,
    *,
    pieces: list[str] | None = None,
    piece_gap_s: float = 0.0,
    status: str = "ANSWERED",
    final_text: str | None = None,
    redo: list[str] | None = None,
) -> None:
    """Play the pipeline's part: answer every ChatRequest on chat.inbound on chat.outbound.

    The reply is built with ``ChatResponse.for_request`` exactly as the real validate stage does, so
    the channel addressing in ``metadata`` travels back the way it will in production. With
    ``pieces`` the answer is first streamed as ``ChatDelta`` records on chat.deltas, ``piece_gap_s``
    apart, as the generate stage does; ``status``/``final_text`` set the authoritative reply. With
    ``redo`` the turn is then generated again, as after a worker died mid-answer: ``pieces`` go out
    under attempt "a" without a final one, ``redo`` under a later attempt "b" from seq 0, then a late
    piece of "a" and a zombie's seq 0 under "a" (both superseded: a reader must drop them).
    """
    from processors.records import ChatDelta, ChatRequest, ChatResponse, Citation, Status, new_attempt_id
    from streams.codec import make_codec

    codec = make_codec(settings)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"fake-pipeline-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    consumer.subscribe([settings.topics.inbound])
    try:
        while not stop.is_set():
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            req = codec.decode(msg.value(), ChatRequest)
            first = pieces or []
            a, b = new_attempt_id(), new_attempt_id(int(time.time() * 1000) + 20_000)  # b: after a was judged dead
            streamed = [(a, seq, piece, not redo and seq == len(first) - 1) for seq, piece in enumerate(first)]
            if redo:
                streamed += [(b, seq, piece, seq == len(redo) - 1) for seq, piece in enumerate(redo)]
                streamed.insert(len(first) + 1, (a, len(first), " (late piece of a)", False))
                streamed.insert(len(first) + 3, (a, 0, "(late first piece of a zombie a)", False))
            for attempt, seq, piece, last in streamed:
                delta = ChatDelta(req.message_id, req.session_id, req.channel, seq, piece, last,
                                  metadata=dict(req.metadata), tenant=req.tenant, attempt=attempt)
                producer.produce(settings.topics.deltas, codec.encode(delta), key=req.session_id)
                producer.flush(10)
                time.sleep(piece_gap_s)
            text = final_text or f"To reset your password, open Settings > Security. (you asked: {req.text})"
            resp = ChatResponse.for_request(
                req, text, Status(status),
                citations=[Citation("kb-17", "Resetting your password", "https://help.example/reset", 0.91)])
            producer.produce(settings.topics.outbound, codec.encode(resp), key=req.session_id,
                             headers=[(k, v) for k, v in (msg.headers() or []) if k == "traceparent"])
            producer.flush(10)
            answered.append(req)
    finally:
        consumer.close()


def start_deliver(settings: Settings, slack_url: str, group: str, log, *, slack_rate_per_s: float, **env: str):  # type: ignore[no-untyped-def]
    """A real `chatstream deliver` process posting to a Slack stand-in, in its own process group (for kill -9)."""
    import json
    import subprocess
    import sys

    from streams.dev.worker_process import settings_env

    full_env = settings_env(
        settings,
        CHATSTREAM_SLACK_API_URL=slack_url,
        CHATSTREAM_SLACK_BOT_TOKEN="xoxb-test",
        CHATSTREAM_DELIVER_GROUP=group,
        CHATSTREAM_DELIVER_RATE_PER_S=json.dumps({"slack": slack_rate_per_s}),
        CHATSTREAM_OTLP_ENDPOINT="",
        **env,
    )
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "deliver"], env=full_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
