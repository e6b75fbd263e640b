"""Consumer lag on the real Kafka: one long-lived LagProbe answers read after read."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import Settings
from streams.lag import LagProbe

pytestmark = pytest.mark.stack


@pytest.fixture()
def topic():
    settings = Settings()
    name = f"lag-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(15)
    yield settings, name
    admin.delete_topics([name])[name].result(15)


def test_one_probe_follows_commits_across_reads(topic) -> None:
    settings, name = topic
    group = f"lag-group-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(10):
        producer.produce(name, value=b"x", partition=i % 2)
    assert producer.flush(15) == 0

    probe = LagProbe(settings)
    try:
        assert probe.lag(group, [name]) == {name: 10}  # nothing committed: everything is behind
        committer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
        committer.commit(offsets=[TopicPartition(name, 0, 5), TopicPartition(name, 1, 2)], asynchronous=False)
        committer.close()
        assert probe.lag(group, [name]) == {name: 3}
        assert probe.lag(group, [name, "no-such-topic"]) == {name: 3}
    finally:
        probe.close()
