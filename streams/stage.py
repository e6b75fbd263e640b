"""One stage's handling of one record: decode, process, emit, then (and only then) done.

The runner is where the pipeline's promises are kept for every stage alike:
* bad bytes, unknown schemas and records that break a rule go to ``chat.deadletter`` whole, with the
  reason; the stage moves on;
* transient trouble (Redis, Kafka down) is retried with backoff, so a good turn is never
  dead-lettered and a stalled stage simply stops pulling (the in-flight window back-pressures);
* outputs are on Kafka (acks=all) before the input counts as done, so a crash means "again", never
  "lost"; repeats are removed where replies are produced (``after_emit`` hooks of the stages);
* every record is handled inside ``<topic> process``, a CONSUMER span parented by the upstream
  context, and that context is injected once into everything produced.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod
from typing import Any

from opentelemetry.trace import Span

from processors.backoff import retry_transient
from streams import metrics, tracing
from streams.codec import Codec, DecodeError
from streams.config import Settings
from streams.deadletter import RejectedInput, dead_letter_for
from streams.errors import is_transient
from streams.message import InboundMessage, OutboundRecord
from streams.pipeline import source_topic
from streams.producer import AsyncProducer

log = logging.getLogger(__name__)


class Stage(ABC):
    """A topic-to-topic step; subclasses adapt one processor and know nothing of Kafka."""

    name: str
    input_type: type

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = settings.topics

    @property
    def source(self) -> str:
        """The topic this stage reads, from the pipeline table (``streams.pipeline``)."""
        return source_topic(self.settings, self.name)

    def attach_producer(self, producer: AsyncProducer, codec: Codec) -> None:
        """The worker's producer and codec, handed over before ``start``: for stages that publish
        besides their outputs (generate's provisional deltas on chat.deltas)."""
        self.producer = producer
        self.codec = codec

    async def start(self, codec: Codec) -> None:
        """Open clients; called once before the first record."""

    async def stop(self) -> None:
        """Close clients."""

    @abstractmethod
    async def process(self, record: Any, msg: InboundMessage, span: Span) -> list[OutboundRecord]: ...

    async def after_emit(self, record: Any, outputs: list[OutboundRecord]) -> None:
        """Bookkeeping that must follow a successful produce (reply markers, session history)."""

    def on_partitions_assigned(self, newly_assigned: set[tuple[str, int]]) -> None:
        """This worker took over partitions (another worker may have died mid-turn there)."""

    def message_id(self, record: Any) -> str | None:
        request = getattr(record, "request", record)
        return getattr(request, "message_id", None)


class StageRunner:
    def __init__(self, stage: Stage, settings: Settings, codec: Codec, producer: AsyncProducer) -> None:
        self.stage = stage
        self.settings = settings
        self.codec = codec
        self.producer = producer
        self.group = settings.consumer_group

    async def handle(self, msg: InboundMessage) -> None:
        """Handle one record to completion; raises only when cancelled."""
        started = time.perf_counter()
        attributes = tracing.process_attributes(msg.topic, msg.partition, msg.offset, self.stage.name, self.group)
        with tracing.consumer_span(msg.topic, msg.headers, attributes) as span:
            outcome = "ok"
            try:
                record = await self._retry_transient(self._decoder(msg), span, "decode")
            except DecodeError as exc:
                outcome = "deadletter"
                outputs = self._dead_letter(msg, exc, span, None)
                record = None
            else:
                mid = self.stage.message_id(record)
                if mid:
                    span.set_attribute("messaging.message.id", mid)
                outputs = await self._process(record, msg, span)
                if outputs and all(o.topic == self.settings.topics.deadletter for o in outputs):
                    outcome = "deadletter"
            await self._emit(outputs, msg, span)
            if record is not None:
                await self._retry_transient(lambda: self.stage.after_emit(record, outputs), span, "after_emit")
            metrics.stage_processed(self.stage.name, time.perf_counter() - started, outcome)

    async def _process(self, record: Any, msg: InboundMessage, span: Span) -> list[OutboundRecord]:
        try:
            return await self._retry_transient(lambda: self.stage.process(record, msg, span), span, "process")
        except RejectedInput as exc:
            return self._dead_letter(msg, exc, span, self.stage.message_id(record))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a poison record: never block the partition on it
            log.exception("stage %s failed on %s[%d]@%d", self.stage.name, msg.topic, msg.partition, msg.offset)
            return self._dead_letter(msg, exc, span, self.stage.message_id(record))

    def _dead_letter(
        self, msg: InboundMessage, exc: BaseException, span: Span, message_id: str | None
    ) -> list[OutboundRecord]:
        tracing.record_failure(span, exc)
        span.add_event("dead-lettered", {"chatstream.stage": self.stage.name, "error.type": type(exc).__name__})
        metrics.dead_lettered(self.stage.name, type(exc).__name__)
        log.warning("dead-lettering %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, exc)
        letter = dead_letter_for(msg, self.stage.name, exc, message_id)
        return [OutboundRecord(self.settings.topics.deadletter, msg.session_key, letter)]

    async def _emit(self, outputs: list[OutboundRecord], msg: InboundMessage, span: Span) -> None:
        if not outputs:
            return
        headers = tracing.inject(
            [(k, v) for k, v in msg.headers if k.startswith("chatstream-") and k != "chatstream-replay-count"]
        )
        sends = []
        for out in outputs:
            try:  # a registry outage is transient (wait); a record our schema refuses is a bug
                data = await self._retry_transient(self._encoder(out), span, "encode")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                tracing.record_failure(span, exc, "encode failed")
                log.exception("cannot encode %s for %s", type(out.record).__name__, out.topic)
                letter = dead_letter_for(msg, self.stage.name, RuntimeError(f"output could not be encoded: {exc}"))
                out = OutboundRecord(self.settings.topics.deadletter, msg.session_key, letter)
                data = await self._retry_transient(self._encoder(out), span, "encode")
            sends.append(self._send(out.topic, out.key, data, headers, span))
        # In the order returned, each delivered before the next is produced: a stage returns its reply
        # last, so a reply found on chat.outbound (which marker recovery takes as "answered") means
        # everything returned before it is on Kafka too. Concurrent sends lost an ESCALATED turn's
        # escalation when a worker died after the reply was delivered and before the escalation was.
        for send in sends:
            await send

    def _decoder(self, msg: InboundMessage):
        async def decode() -> Any:
            return self.codec.decode(msg.value, self.stage.input_type)  # type: ignore[arg-type]

        return decode

    def _encoder(self, out: OutboundRecord):
        async def encode() -> bytes:
            return self.codec.encode(out.record, topic=out.topic)

        return encode

    async def _send(self, topic: str, key: str, data: bytes, headers: list, span: Span) -> None:
        await self._retry_transient(lambda: self.producer.send(topic, data, key=key, headers=headers), span, "produce")

    async def _retry_transient(self, fn, span: Span, what: str) -> Any:
        """Retry transient failures forever with capped backoff: waiting is better than losing."""

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            span.add_event(
                "retry", {"chatstream.step": what, "error.type": type(exc).__name__, "retry.attempt": attempt}
            )
            metrics.transient_retry(self.stage.name, what)
            if attempt in (1, 5) or attempt % 20 == 0:
                log.warning("%s/%s transient failure (attempt %d): %s", self.stage.name, what, attempt, exc)

        return await retry_transient(
            fn, is_transient=is_transient, base_s=0.1, max_s=5.0, deadline_s=math.inf, on_retry=on_retry
        )
