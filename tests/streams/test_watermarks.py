"""A partition's watermarks are asked again while it has no leader yet (``streams.runtime.clients.watermarks``).

Right after a topic is created, or a broker restarts, a partition answers NOT_LEADER_FOR_PARTITION for
a moment (CI saw it). That moment is not an answer: every reader that positions itself by watermarks
asks through the one helper.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.config import Settings
from streams.console.tail import TopicTail
from streams.runtime.clients import watermarks


class _LeaderlessFor:
    """A consumer whose partitions have no leader for its first ``n`` watermark queries (a new topic)."""

    def __init__(self, n: int, code: int = KafkaError.NOT_LEADER_FOR_PARTITION, topics: tuple[str, ...] = ()) -> None:
        self.n, self.code, self.calls = n, code, 0
        self.topics = topics

    def get_watermark_offsets(self, partition, timeout):
        self.calls += 1
        if self.calls <= self.n:
            raise KafkaException(KafkaError(self.code))
        return 0, 7

    def list_topics(self, topic=None, timeout=None):
        partitions = {0: None, 1: None}
        return SimpleNamespace(topics={t: SimpleNamespace(error=None, partitions=partitions) for t in self.topics})


def test_watermarks_are_asked_again_while_a_partition_has_no_leader_yet() -> None:
    """CI saw NOT_LEADER_FOR_PARTITION for a topic created a moment before: it passes, it is not an answer."""
    consumer = _LeaderlessFor(3)
    assert watermarks(consumer, TopicPartition("t", 0), timeout_s=5) == (0, 7) and consumer.calls == 4
    with pytest.raises(KafkaException):  # a leader that never comes: the error, once the time is up
        watermarks(_LeaderlessFor(10**6), TopicPartition("t", 0), timeout_s=0.3)
    authorization = _LeaderlessFor(1, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):  # anything else is not waited out
        watermarks(authorization, TopicPartition("t", 0), timeout_s=5)
    assert authorization.calls == 1


def test_the_asks_share_one_timeout() -> None:
    """Each ask waits only for what is left of ``timeout_s``: a broker that takes each ask's whole
    timeout before saying "no leader" costs the caller ``timeout_s``, not twice it."""
    timeouts: list[float] = []

    class _SlowLeaderless(_LeaderlessFor):
        def get_watermark_offsets(self, partition, timeout):
            timeouts.append(timeout)
            time.sleep(min(timeout, 0.2))  # the broker answers at the end of the ask's wait
            return super().get_watermark_offsets(partition, timeout)

    with pytest.raises(KafkaException):
        watermarks(_SlowLeaderless(10**6), TopicPartition("t", 0), timeout_s=0.5)
    assert len(timeouts) >= 2 and timeouts[0] == pytest.approx(0.5, abs=0.02)
    assert all(b <= a for a, b in zip(timeouts, timeouts[1:])) and timeouts[-1] < timeouts[0] - 0.15


def test_the_console_positions_itself_on_topics_whose_leaders_are_not_there_yet() -> None:
    """The console's tail starts from each partition's end minus its backfill, through the helper."""
    settings = Settings()
    tail = TopicTail(settings, store=None, backfill=5)  # type: ignore[arg-type]
    consumer = _LeaderlessFor(2, topics=(settings.topics.inbound, settings.topics.outbound))
    positions = tail._start_positions(consumer)  # type: ignore[arg-type]
    assert sorted((tp.topic, tp.partition, tp.offset) for tp in positions) == sorted(
        (t, p, 2) for t in (settings.topics.inbound, settings.topics.outbound) for p in (0, 1)
    )
    assert consumer.calls == 4 + 2
