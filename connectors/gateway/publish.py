"""Turning an accepted channel request into a record on Kafka, before the channel hears 2xx.

The producer is acks=all with idempotence; the await is bounded so that, with Kafka down, the
channel gets 503 within ``gateway_publish_timeout_s`` and retries later: never 200-and-drop.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Protocol

from opentelemetry.trace import SpanKind

from processors.records import ChatFeedback, ChatRequest
from streams import metrics
from streams.codec import Codec
from streams.producer import ProduceError
from streams.tracing import hash_user, inject, record_failure, tracer

log = logging.getLogger("chatstream.gateway")

# Namespace of the deterministic message ids: the same channel event always gets the same id.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1d3c52-9a0e-4c39-8c2e-2f6f7f0b9c11")


def message_id_for(*parts: str) -> str:
    """A stable message id from a channel's own event identity, so a channel retry is one turn."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, ":".join(parts)))


class Producer(Protocol):
    async def send(self, topic: str, value: bytes | None, *, key: Any = None, headers: Any = None) -> Any: ...


class Unavailable(Exception):
    """Kafka did not acknowledge in time; the channel must retry (503)."""


class Publisher:
    def __init__(self, producer: Producer, codec: Codec, settings: Any) -> None:
        self.producer = producer
        self.codec = codec
        self.settings = settings
        self.timeout_s = settings.gateway_publish_timeout_s

    async def _send(self, topic: str, key: str, value: bytes, headers: list) -> None:
        try:
            await asyncio.wait_for(self.producer.send(topic, value, key=key, headers=headers), self.timeout_s)
        except (ProduceError, asyncio.TimeoutError) as exc:
            raise Unavailable(f"{topic}: {type(exc).__name__}: {exc}") from exc

    async def request(self, req: ChatRequest) -> None:
        """Publish one user turn on chat.inbound under a PRODUCER span whose context travels along."""
        topic = self.settings.topics.inbound
        value = self.codec.encode(req)
        attrs = {
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.message.id": req.message_id,
            "messaging.kafka.message.key": req.session_id,
            "chat.channel": req.channel,
            "chat.tenant": req.tenant,
            "chat.user": hash_user(req.user_id, self.settings.trace_include_content),
        }
        with tracer("chatstream.gateway").start_as_current_span(
            f"{topic} publish", kind=SpanKind.PRODUCER, attributes=attrs
        ) as span:
            headers = inject([("message_id", req.message_id.encode()), ("channel", req.channel.encode())])
            try:
                await self._send(topic, req.session_id, value, headers)
            except Unavailable as exc:
                record_failure(span, exc)
                raise

    async def feedback(self, fb: ChatFeedback) -> None:
        topic = self.settings.topics.feedback
        attrs = {"messaging.system": "kafka", "messaging.destination.name": topic, "messaging.message.id": fb.message_id}
        with tracer("chatstream.gateway").start_as_current_span(
            f"{topic} publish", kind=SpanKind.PRODUCER, attributes=attrs
        ) as span:
            headers = inject([("message_id", fb.message_id.encode())])
            try:
                await self._send(topic, fb.session_id, self.codec.encode(fb), headers)
            except Unavailable as exc:
                record_failure(span, exc)
                raise
            metrics.feedback_received(fb.kind.value, fb.channel, fb.score)  # counted once Kafka has it
