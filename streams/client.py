"""A channel's view of the pipeline: publish turns, collect their replies.

``chatstream send``, the demo, the benchmark and the end-to-end tests all drive the pipeline through
this, exactly the way a channel connector does: a ``ChatRequest`` keyed by session on
``chat.inbound`` with a fresh trace, and the answer read back from ``chat.outbound``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any, Callable

from confluent_kafka import TopicPartition
from opentelemetry.trace import SpanKind

from processors.records import ChatEscalation, ChatRequest, ChatResponse, now_ms
from streams import tracing
from streams.codec import Codec, DecodeError, make_codec
from streams.config import Settings
from streams.producer import PIPELINE_MAX_REQUEST, AsyncProducer
from streams.runtime.clients import make_tail_consumer, watermarks


def new_request(text: str, session_id: str, *, user_id: str = "cli-user", channel: str = "cli", **kw: Any) -> ChatRequest:
    return ChatRequest(
        message_id=kw.pop("message_id", None) or str(uuid.uuid4()),
        session_id=session_id,
        user_id=user_id,
        channel=channel,
        text=text,
        sent_at=kw.pop("sent_at", None) or now_ms(),
        metadata=kw.pop("metadata", {}),
        tenant=kw.pop("tenant", "default"),
    )


class TopicTail:
    """Reads a topic from its end (as of ``start``) in a thread and hands decoded records to a callback."""

    def __init__(self, settings: Settings, topic: str, decode: Callable[[bytes], Any], on_record: Callable[[Any, Any], None]) -> None:
        self._consumer = make_tail_consumer(settings, "tail", **{"auto.offset.reset": "latest"})
        self._topic = topic
        self._decode = decode
        self._on_record = on_record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tail-{topic}", daemon=True)
        self._ready = threading.Event()

    def start(self, timeout_s: float = 15.0) -> None:
        meta = self._consumer.list_topics(self._topic, timeout=timeout_s)
        if self._topic not in meta.topics or meta.topics[self._topic].error is not None:
            raise RuntimeError(f"topic {self._topic} does not exist: run `chatstream topics create`")
        parts = []
        for p in meta.topics[self._topic].partitions:
            _, high = watermarks(self._consumer, TopicPartition(self._topic, p), timeout_s)
            parts.append(TopicPartition(self._topic, p, high))
        self._consumer.assign(parts)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                msg = self._consumer.poll(0.1)
                if msg is None or msg.error():
                    continue
                try:
                    record = self._decode(msg.value())
                except DecodeError:
                    continue
                self._on_record(record, msg)
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


class ChatClient:
    """Publish turns and await their replies; one instance per process is plenty."""

    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self.settings = settings
        self.codec = codec or make_codec(settings)
        self.producer = AsyncProducer(settings.kafka_bootstrap, **PIPELINE_MAX_REQUEST)
        self.replies: dict[str, list[ChatResponse]] = {}
        self.reply_order: list[ChatResponse] = []
        self.escalations: list[ChatEscalation] = []
        self._waiters: dict[str, asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tails: list[TopicTail] = []

    async def __aenter__(self) -> "ChatClient":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        t = self.settings.topics
        out = TopicTail(self.settings, t.outbound, lambda b: self.codec.decode(b, ChatResponse), self._on_reply)
        esc = TopicTail(self.settings, t.escalations, lambda b: self.codec.decode(b, ChatEscalation), self._on_escalation)
        for tail in (out, esc):
            await asyncio.to_thread(tail.start)
            self._tails.append(tail)

    def _on_reply(self, response: ChatResponse, msg: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, response)

    def _on_escalation(self, escalation: ChatEscalation, msg: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.escalations.append, escalation)

    def _deliver(self, response: ChatResponse) -> None:
        self.replies.setdefault(response.message_id, []).append(response)
        self.reply_order.append(response)
        waiter = self._waiters.get(response.message_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    async def send(self, request: ChatRequest, headers: list[tuple[str, bytes | None]] | None = None) -> None:
        """Publish one turn as a channel would: new trace, PRODUCER span, context injected once."""
        assert self._loop is not None, "call start() first"
        self._waiters.setdefault(request.message_id, self._loop.create_future())
        if request.message_id in self.replies:
            self._waiters[request.message_id].set_result(self.replies[request.message_id][0])
        topic = self.settings.topics.inbound
        with tracing.tracer("chatstream.client").start_as_current_span(
            f"{topic} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "publish",
                "messaging.destination.name": topic,
                "messaging.message.id": request.message_id,
                "chatstream.channel": request.channel,
            },
        ):
            await self.producer.send(
                topic, self.codec.encode(request), key=request.session_id, headers=tracing.inject(headers)
            )

    async def send_raw(self, value: bytes | None, key: str | None, headers: list | None = None) -> None:
        """Publish arbitrary bytes (tests of bad input)."""
        await self.producer.send(self.settings.topics.inbound, value, key=key, headers=headers or [])

    async def wait_reply(self, message_id: str, timeout_s: float = 60.0) -> ChatResponse:
        assert self._loop is not None
        waiter = self._waiters.setdefault(message_id, self._loop.create_future())
        return await asyncio.wait_for(asyncio.shield(waiter), timeout_s)

    async def ask(self, request: ChatRequest, timeout_s: float = 60.0) -> ChatResponse:
        await self.send(request)
        return await self.wait_reply(request.message_id, timeout_s)

    async def settle(self, quiet_s: float = 1.0) -> None:
        """Wait until no reply arrived for ``quiet_s`` (to see late duplicates)."""
        last = len(self.reply_order)
        deadline = time.monotonic() + quiet_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if len(self.reply_order) != last:
                last = len(self.reply_order)
                deadline = time.monotonic() + quiet_s

    async def close(self) -> None:
        for tail in self._tails:
            await asyncio.to_thread(tail.stop)
        await self.producer.close()
