"""Helpers for the connector tests that use the real local Kafka and Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer

from streams.config import Settings
from streams.topics import create_topics


def stack_settings(**overrides: Any) -> Settings:
    """Settings in a fresh topic namespace, so tests never see each other's records."""
    base: dict[str, Any] = {
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}.",
        "otlp_endpoint": None,
        "consumer_group": f"test-{uuid.uuid4().hex[:8]}",
    }
    base.update(overrides)
    s = Settings(**base)
    create_topics(s)
    return s


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
