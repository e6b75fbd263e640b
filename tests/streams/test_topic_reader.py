"""Reading a topic (or its tail) to its current end, on the real Kafka."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import Settings
from streams.topic_reader import TopicMissing, read_topic, watermarks

pytestmark = pytest.mark.stack


@pytest.fixture()
def topic():
    settings = Settings()
    name = f"reader-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(15)
    yield settings, name
    admin.delete_topics([name])[name].result(15)


def test_reads_everything_then_stops_and_tail_reads_the_last_per_partition(topic) -> None:
    settings, name = topic
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(30):
        producer.produce(name, value=str(i).encode(), partition=i % 3)
    assert producer.flush(15) == 0
    everything = sorted(int(m.value()) for m in read_topic(settings, name))
    assert everything == list(range(30))
    tail = sorted(int(m.value()) for m in read_topic(settings, name, tail=2))
    assert tail == [24, 25, 26, 27, 28, 29]


def test_empty_and_missing_topics(topic) -> None:
    settings, name = topic
    assert list(read_topic(settings, name)) == []
    with pytest.raises(TopicMissing, match="does not exist"):
        list(read_topic(settings, f"missing-{uuid.uuid4().hex}"))


class _LeaderlessFor:
    """A consumer whose partition has no leader for its first ``n`` watermark queries (a new topic)."""

    def __init__(self, n: int, code: int = KafkaError.NOT_LEADER_FOR_PARTITION) -> None:
        self.n, self.code, self.calls = n, code, 0

    def get_watermark_offsets(self, partition, timeout):
        self.calls += 1
        if self.calls <= self.n:
            raise KafkaException(KafkaError(self.code))
        return 0, 7


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
