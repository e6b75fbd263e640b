"""Consumer lag per topic: how far the pipeline is behind, the first number an operator checks."""

from __future__ import annotations

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from streams.config import Settings
from streams.pipeline import stage_sources
from streams.runtime.clients import make_admin, make_tail_consumer



def consumer_lag(settings: Settings, timeout_s: float = 5.0) -> dict[str, int]:
    """Sum over partitions of (end offset - committed offset) for each stage's source topic."""
    admin = make_admin(settings)
    topics = stage_sources(settings)
    meta = admin.list_topics(timeout=timeout_s)
    partitions = [
        TopicPartition(t, p) for t in topics if t in meta.topics for p in meta.topics[t].partitions
    ]
    if not partitions:
        return {}
    request = [ConsumerGroupTopicPartitions(settings.consumer_group, partitions)]
    committed = admin.list_consumer_group_offsets(request)[settings.consumer_group].result(timeout_s)
    probe = make_tail_consumer(settings, "lag-probe")
    try:
        lag: dict[str, int] = {t: 0 for t in topics if t in meta.topics}
        for tp in committed.topic_partitions:
            low, high = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout_s)
            position = tp.offset if tp.offset >= 0 else low
            lag[tp.topic] += max(0, high - position)
        return lag
    finally:
        probe.close()
