"""Reading a topic (or its tail) to its current end, on the real Kafka."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import Settings
from streams.topic_reader import TopicMissing, read_topic

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
