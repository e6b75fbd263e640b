"""Read a topic from a start point to its end as of now, then stop.

Dead-letter listings, reply recovery and diagnostics all need "what is in this topic (or its tail)
right now", not a subscription: assign every partition without a consumer group commit, read to
the high watermark (or end-of-partition, which also covers control records), close.
"""

from __future__ import annotations

from collections.abc import Iterator

from confluent_kafka import KafkaError, Message, TopicPartition

from streams.config import Settings
from streams.runtime.clients import make_tail_consumer, watermarks


class TopicMissing(LookupError):
    """The topic does not exist (yet)."""


def read_topic(settings: Settings, topic: str, *, tail: int | None = None, timeout_s: float = 10.0) -> Iterator[Message]:
    """Records of ``topic`` from the beginning (or the last ``tail`` per partition) to the current end.

    Raises ``TimeoutError`` when a partition that has data does not deliver it within ``timeout_s``.
    """
    consumer = make_tail_consumer(settings, "reader", **{"enable.partition.eof": True})
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise TopicMissing(f"topic {topic} does not exist: run `chatstream topics create`")
        ends: dict[int, int] = {}
        assignment = []
        for p in meta.topics[topic].partitions:
            low, high = watermarks(consumer, TopicPartition(topic, p), timeout_s)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low if tail is None else max(low, high - tail)))
        if not assignment:
            return
        consumer.assign(assignment)
        while ends:
            msg = consumer.poll(timeout_s)
            if msg is None:
                raise TimeoutError(f"{topic}: partitions {sorted(ends)} delivered nothing within {timeout_s:.0f} s")
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    ends.pop(msg.partition(), None)
                    continue
                raise RuntimeError(f"{topic}: {msg.error()}")
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
            yield msg
    finally:
        consumer.close()
