"""Follow the pipeline's topics into the console's store.

The one module of the console that builds a Kafka consumer, so it can move onto the project's
consumer runtime without touching the rest. It reads, it never commits: every partition is assigned
(no consumer group membership, no rebalances, no offsets written) starting ``backfill`` records
before the end, then follows. Records that do not decode are skipped here: the pipeline already
dead-letters them, and the console shows the dead-letter topic itself.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from processors.records import ChatEscalation, ChatFeedback, ChatRequest, ChatResponse, DeadLetter
from streams.codec import DecodeError, make_codec
from streams.config import Settings
from streams.console.store import TurnStore, reply_row, request_row
from streams.runtime.clients import make_tail_consumer, watermarks

log = logging.getLogger("chatstream.console.tail")


def trace_id_of(headers: list[tuple[str, bytes | None]] | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header (``00-<trace id>-<span id>-<flags>``)."""
    for key, value in headers or []:
        if key == "traceparent" and value:
            parts = value.decode("ascii", "replace").split("-")
            if len(parts) >= 3 and len(parts[1]) == 32:
                return parts[1]
    return None


class TopicTail:
    """A daemon thread: poll a batch, decode, write it to the store in one transaction."""

    def __init__(self, settings: Settings, store: TurnStore, backfill: int = 5000) -> None:
        self.settings = settings
        self.store = store
        self.backfill = backfill
        self.codec = make_codec(settings)
        t = settings.topics
        self.kinds = {
            t.inbound: ("request", ChatRequest),
            t.outbound: ("reply", ChatResponse),
            t.escalations: ("escalation", ChatEscalation),
            t.deadletter: ("deadletter", DeadLetter),
            t.feedback: ("feedback", ChatFeedback),
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-tail", daemon=True)
        self.ready = threading.Event()
        self.records = 0

    def start(self) -> "TopicTail":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _consumer(self) -> Consumer:
        return make_tail_consumer(self.settings, "console", **{"isolation.level": "read_committed"})

    def _assign(self, consumer: Consumer) -> None:
        assignment: list[TopicPartition] = []
        while not assignment and not self._stop.is_set():
            try:
                assignment = self._start_positions(consumer)
            except KafkaException as exc:  # Kafka not up (yet): the console keeps serving what it has
                log.warning("cannot read topic metadata (%s); retrying in 5 s", exc)
            if not assignment:
                self._stop.wait(5)
        consumer.assign(assignment)

    def _start_positions(self, consumer: Consumer) -> list[TopicPartition]:
        """Every partition of the followed topics, ``backfill`` records before its end."""
        assignment = []
        meta = consumer.list_topics(timeout=10)
        for topic in self.kinds:
            if topic not in meta.topics or meta.topics[topic].error is not None:
                continue
            for p in meta.topics[topic].partitions:
                low, high = watermarks(consumer, TopicPartition(topic, p), 10)
                assignment.append(TopicPartition(topic, p, max(low, high - self.backfill)))
        if not assignment:
            log.warning("none of %s exist yet; run `chatstream topics create`", ", ".join(self.kinds))
        return assignment

    def _run(self) -> None:
        consumer = self._consumer()
        try:
            self._assign(consumer)
            self.ready.set()
            while not self._stop.is_set():
                messages = consumer.consume(500, 0.5)
                batch = [row for row in (self._row(m) for m in messages) if row is not None]
                if batch:
                    self.store.write(batch)
                    self.records += len(batch)
        except Exception:  # a console that stops following must say so, not freeze silently
            log.exception("topic tail stopped")
        finally:
            consumer.close()

    def _row(self, msg: Any) -> tuple[str, dict[str, Any]] | None:
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", msg.error())
            return None
        kind, record_type = self.kinds[msg.topic()]
        try:
            record = self.codec.decode(msg.value(), record_type)
        except DecodeError:
            return None
        headers = list(msg.headers() or [])
        if kind == "request":
            _, ts = msg.timestamp()
            return kind, request_row(record, trace_id_of(headers), ts if ts > 0 else int(time.time() * 1000))
        if kind == "reply":
            return kind, reply_row(record, trace_id_of(headers))
        if kind == "feedback":
            return kind, {"message_id": record.message_id, "kind": record.kind.value, "score": record.score,
                          "created_at": record.created_at}
        if kind == "escalation":
            return kind, {"message_id": record.message_id, "reason": record.reason, "created_at": record.created_at}
        return kind, {"ref": f"{msg.partition()}:{msg.offset()}", "stage": record.stage, "error_class": record.error_class,
                      "message_id": record.message_id, "created_at": record.failed_at}
