"""What deliver and the sinks share: their consumer group on the one runtime, and dead letters.

Each edge is a ``Lane`` of ``streams.runtime``: records of one partition are handled one after the
other (partitions concurrently), and an offset is committed only once every record before it is
done, so a committed offset never passes a record whose effect (a Slack post, a ticket) has not
happened yet. A crash in between means those records are read again; the handlers make that
harmless (delivered markers, idempotency keys). Revocation finishes the revoked partitions' records
(up to ``shutdown_grace_s``) and commits before they move; SIGTERM does the same for all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from processors.backoff import retry_transient
from processors.records import DeadLetter
from streams.codec import DecodeError
from streams.deadletter import dead_letter_for as pipeline_dead_letter
from streams.message import InboundMessage
from streams.producer import ProduceError
from streams.runtime.clients import make_consumer
from streams.runtime.consumer import ConsumerRuntime, run_until
from streams.runtime.lane import Lane
from streams.tracing import consumer_span, process_attributes, record_failure

log = logging.getLogger("chatstream.connectors")

Commits = dict[tuple[str, int], int]  # (topic, partition) -> next offset to read

__all__ = [
    "Commits", "dead_letter_for", "decode_or_dead_letter", "in_partition_order", "make_consumer", "process_span",
    "run_edge", "send_dead_letter",
]


async def in_partition_order(messages: list[Any], handle: Callable[[Any], Awaitable[None]]) -> Commits:
    """Handle a list of records as the runtime would: one partition in order, partitions concurrently."""
    by_partition: OrderedDict[tuple[str, int], list[Any]] = OrderedDict()
    for msg in messages:
        by_partition.setdefault((msg.topic(), msg.partition()), []).append(msg)

    async def run(msgs: list[Any]) -> None:
        for msg in msgs:
            await handle(msg)

    await asyncio.gather(*(run(msgs) for msgs in by_partition.values()))
    return {tp: msgs[-1].offset() + 1 for tp, msgs in by_partition.items()}


async def run_edge(
    consumer: Any,
    lane: Lane,
    stop: asyncio.Event,
    *,
    grace_s: float = 20.0,
    tick: Callable[[], Any] | None = None,
    tick_interval_s: float = 1.0,
) -> None:
    """Consume ``lane``'s topics in ``consumer``'s group until ``stop`` is set; then drain and commit."""
    runtime = ConsumerRuntime(consumer, [lane], grace_s=grace_s, tick=tick, tick_interval_s=tick_interval_s)
    await run_until(runtime, stop)


def process_span(msg: Any, edge: str):
    """The ``<topic> process`` span of one record at an edge, parented by its producer's context."""
    return consumer_span(msg.topic(), msg.headers() or [],
                         process_attributes(msg.topic(), msg.partition(), msg.offset(), edge))


async def decode_or_dead_letter(
    msg: Any, record_type: type, edge: str, *, codec: Any, producer: Any, settings: Any, span: Any = None
) -> Any | None:
    """The decoded record, or ``None`` once its bytes went to the dead-letter topic with the reason."""
    try:
        return codec.decode(msg.value(), record_type)
    except DecodeError as exc:
        if span is not None:
            record_failure(span, exc)
        await send_dead_letter(producer, codec, settings, dead_letter_for(msg, edge, exc))
        return None


def dead_letter_for(msg: Any, stage: str, exc: BaseException, message_id: str | None = None) -> DeadLetter:
    """The pipeline's dead letter (streams.deadletter) for a confluent-kafka message."""
    return pipeline_dead_letter(InboundMessage.from_confluent(msg), stage, exc, message_id)


async def send_dead_letter(producer: Any, codec: Any, settings: Any, letter: DeadLetter) -> None:
    """Dead letters must not be lost either: retry until Kafka takes it (the offset waits)."""
    key = letter.key
    value = codec.encode(letter)

    async def send() -> Any:
        return await producer.send(settings.topics.deadletter, value, key=key, headers=[("stage", letter.stage.encode())])

    await retry_transient(send, is_transient=lambda e: isinstance(e, ProduceError), base_s=0.5, max_s=10, deadline_s=3600)
    log.error(
        "dead-lettered %s[%d]@%d (%s): %s: %s",
        letter.topic, letter.partition, letter.offset, letter.message_id or "-", letter.error_class, letter.error_message,
    )
