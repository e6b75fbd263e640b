"""Consumer lag per topic: how far the pipeline is behind, the first number an operator checks.

``LagProbe`` keeps one admin client and one (never subscribed) consumer for watermarks, so a gauge
scraped every few seconds or a console refreshing its charts does not open two Kafka connections
per read; ``consumer_lag`` is the one-shot form for commands.
"""

from __future__ import annotations

import threading

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from streams.config import Settings
from streams.pipeline import stage_sources
from streams.runtime.clients import make_admin, make_tail_consumer, watermarks



class LagProbe:
    """Reusable lag reader; thread-safe (the Prometheus scrape thread and a console both call it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin = make_admin(settings)
        self._probe = make_tail_consumer(settings, "lag-probe")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._probe.close()

    def lag(self, group: str, topics: list[str], timeout_s: float = 5.0) -> dict[str, int]:
        """Sum over partitions of (end offset - committed offset of ``group``) per topic."""
        with self._lock:
            meta = self._admin.list_topics(timeout=timeout_s)
            partitions = [TopicPartition(t, p) for t in topics if t in meta.topics for p in meta.topics[t].partitions]
            if not partitions:
                return {}
            request = [ConsumerGroupTopicPartitions(group, partitions)]
            committed = self._admin.list_consumer_group_offsets(request)[group].result(timeout_s)
            lag: dict[str, int] = {t: 0 for t in topics if t in meta.topics}
            for tp in committed.topic_partitions:
                low, high = watermarks(self._probe, TopicPartition(tp.topic, tp.partition), timeout_s)
                position = tp.offset if tp.offset >= 0 else low
                lag[tp.topic] += max(0, high - position)
            return lag

    def stage_lag(self, timeout_s: float = 5.0) -> dict[str, int]:
        """Lag of the worker's consumer group on each stage's source topic."""
        topics = stage_sources(self.settings)
        return self.lag(self.settings.consumer_group, topics, timeout_s)


def consumer_lag(settings: Settings, timeout_s: float = 5.0) -> dict[str, int]:
    """One-shot stage lag (``chatstream stats``); long-lived readers keep a ``LagProbe``."""
    probe = LagProbe(settings)
    try:
        return probe.stage_lag(timeout_s)
    finally:
        probe.close()
