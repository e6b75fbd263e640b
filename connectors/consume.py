"""Consuming loops shared by deliver and the sinks: batches, per-partition order, commit after work.

Each batch is handled completely before its offsets are committed (synchronously) and before the
next poll, so a rebalance never happens while a record is half done and a committed offset never
passes a record whose effect (a Slack post, a ticket) has not happened yet. A crash in between means
the batch is read again; the handlers make that harmless (delivered markers, idempotency keys).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from processors.backoff import retry_transient
from processors.records import DeadLetter
from streams.deadletter import dead_letter_for as pipeline_dead_letter
from streams.message import InboundMessage
from streams.producer import ProduceError

log = logging.getLogger("chatstream.connectors")

Commits = dict[tuple[str, int], int]  # (topic, partition) -> next offset to read


def make_consumer(settings: Any, group: str, **overrides: Any) -> Consumer:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 30000,
        "max.poll.interval.ms": 600000,
        "reconnect.backoff.max.ms": 2000,
    }
    config.update(overrides)
    return Consumer(config)


async def in_partition_order(messages: list[Any], handle: Callable[[Any], Awaitable[None]]) -> Commits:
    """Handle records of one partition one after the other, partitions concurrently."""
    by_partition: OrderedDict[tuple[str, int], list[Any]] = OrderedDict()
    for msg in messages:
        by_partition.setdefault((msg.topic(), msg.partition()), []).append(msg)

    async def run(msgs: list[Any]) -> None:
        for msg in msgs:
            await handle(msg)

    await asyncio.gather(*(run(msgs) for msgs in by_partition.values()))
    return {tp: msgs[-1].offset() + 1 for tp, msgs in by_partition.items()}


async def run_loop(
    consumer: Consumer,
    topics: list[str],
    handle_batch: Callable[[list[Any]], Awaitable[Commits]],
    stop: asyncio.Event,
    *,
    batch_size: int = 100,
    poll_s: float = 0.5,
    on_revoke: Callable[[list[TopicPartition]], None] | None = None,
    on_assign: Callable[[list[TopicPartition]], None] | None = None,
    idle: Callable[[], Awaitable[Commits]] | None = None,
) -> None:
    """Poll, handle, commit; until ``stop`` is set. ``idle`` runs after every poll (timers)."""

    def _assign(c: Any, parts: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in parts))
        if on_assign:
            on_assign(parts)

    def _revoke(c: Any, parts: list[TopicPartition]) -> None:
        log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in parts))
        if on_revoke:
            on_revoke(parts)

    consumer.subscribe(topics, on_assign=_assign, on_revoke=_revoke)
    committed: Commits = {}
    try:
        while not stop.is_set():
            messages = await asyncio.to_thread(consumer.consume, batch_size, poll_s)
            good = []
            for msg in messages:
                if msg.error():
                    log.warning("consumer error: %s", msg.error())
                else:
                    good.append(msg)
            commits: Commits = {}
            if good:
                commits.update(await handle_batch(good))
            if idle is not None:
                commits.update(await idle())
            commits = {tp: o for tp, o in commits.items() if committed.get(tp) != o}
            if commits:
                offsets = [TopicPartition(t, p, o) for (t, p), o in commits.items()]
                try:
                    await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
                    committed.update(commits)
                except KafkaException as exc:  # e.g. revoked meanwhile: the new owner re-reads, markers dedup
                    log.warning("commit failed (records will be read again): %s", exc)
    finally:
        await asyncio.to_thread(consumer.close)


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
