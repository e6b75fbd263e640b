"""The local Kafka does what the pipeline relies on: keyed partitioning, consumer groups, committed offsets."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from stack.kafka import Kafka, new_cluster_id
from stack.service import NotReady
from streams.config import Settings

PARTITIONS = 3
MESSAGES = 30
FIRST_BATCH = 20


def consume(consumer: Consumer, count: int, deadline_s: float = 30.0) -> list:
    """Exactly ``count`` messages, or fail after the deadline (bounded, no fixed sleeps)."""
    got = []
    deadline = time.monotonic() + deadline_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} messages within {deadline_s}s"
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
            continue
        got.append(msg)
    return got


@pytest.fixture
def topic(settings: Settings):
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    name = f"stack-test-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[name].result(30)
    yield name
    admin.delete_topics([name])[name].result(30)


@pytest.mark.stack
def test_group_resumes_at_committed_offsets(settings: Settings, topic: str) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    sent = [(f"session-{i % 5}", str(i)) for i in range(MESSAGES)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    group = f"stack-test-{uuid.uuid4().hex[:8]}"
    config = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    first = Consumer(config)
    first.subscribe([topic])
    first_batch = consume(first, FIRST_BATCH)
    first.commit(asynchronous=False)
    committed = {
        tp.partition: tp.offset
        for tp in first.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    }
    first.close()

    # The committed offset of each partition is one past the last message the first consumer saw there.
    for partition in range(PARTITIONS):
        offsets = [m.offset() for m in first_batch if m.partition() == partition]
        assert committed[partition] == (max(offsets) + 1 if offsets else -1001)  # -1001: nothing committed

    second = Consumer(config)
    second.subscribe([topic])
    second_batch = consume(second, MESSAGES - FIRST_BATCH)
    assert second.poll(2.0) is None, "the new group member got more than what was left"
    second.close()

    # It resumed exactly where the group left off: no message twice, none lost.
    for partition in range(PARTITIONS):
        offsets = [m.offset() for m in second_batch if m.partition() == partition]
        if offsets:
            assert min(offsets) == max(committed[partition], 0)
    values = [m.value().decode() for m in first_batch + second_batch]
    assert sorted(values, key=int) == [value for _, value in sent]

    # Keyed messages: one partition per key, and in that partition in the order produced.
    by_key: dict[str, set[int]] = {}
    for m in first_batch + second_batch:
        by_key.setdefault(m.key().decode(), set()).add(m.partition())
    assert all(len(parts) == 1 for parts in by_key.values())
    for key in by_key:
        seen = [int(m.value()) for m in sorted(first_batch + second_batch, key=lambda m: m.offset())
                if m.key().decode() == key]
        assert seen == sorted(seen)


@pytest.mark.stack
def test_auto_create_is_off(settings: Settings) -> None:
    """A typo'd topic name must fail, not appear with one partition (the project creates its topics)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    name = f"stack-test-absent-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": name,
                         "allow.auto.create.topics": True})
    consumer.subscribe([name])
    # wait for the broker's answer to the consumer's metadata request (which asks for auto-creation):
    # "unknown topic", not a topic created on the fly
    answer = None
    deadline = time.monotonic() + 30
    try:
        while answer is None:
            assert time.monotonic() < deadline, "the broker never answered the subscription's metadata request"
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                answer = msg.error()
    finally:
        consumer.close()
    assert answer.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, answer
    assert name not in admin.list_topics(timeout=10).topics


def test_cluster_id_is_kafka_shaped() -> None:
    """22 URL-safe base64 characters (16 random bytes), what `kafka-storage format -t` accepts."""
    ids = {new_cluster_id() for _ in range(5)}
    assert len(ids) == 5
    assert all(len(cid) == 22 and all(c.isalnum() or c in "-_" for c in cid) for cid in ids)


def test_cluster_id_never_starts_with_a_dash(monkeypatch) -> None:
    """`kafka-storage format -t -x...` takes the id for an option: such a draw is redrawn (CI hit one in 64)."""
    import uuid

    import stack.kafka as kafka_module

    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x10" + bytes(15))])
    monkeypatch.setattr(kafka_module.uuid, "uuid4", lambda: next(draws))
    cluster_id = new_cluster_id()
    assert not cluster_id.startswith("-") and len(cluster_id) == 22
    assert cluster_id.startswith("EA"), "the second draw"


def test_server_properties_follow_settings(tmp_path) -> None:
    settings = Settings(home=tmp_path, kafka_port=19092, kafka_controller_port=19093, bind_host="127.0.0.1")
    props = dict(
        line.split("=", 1) for line in Kafka(settings).render_server_properties().splitlines()
        if line and not line.startswith("#")
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["process.roles"] == "broker,controller"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path.resolve() / "kafka" / "data")


def test_broker_jvm_flags_follow_settings(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JVM flags come from ``kafka_jvm_options`` (C1 and the parallel collector unless overridden),
    before the main class, for the broker and for its storage formatting alike."""
    monkeypatch.setattr("stack.kafka.find", lambda tool, cache: "/usr/bin/java")
    monkeypatch.delenv("CHATSTREAM_KAFKA_JVM_OPTIONS", raising=False)
    command = Kafka(Settings(home=tmp_path)).command()
    main = command.index("kafka.Kafka")
    assert {"-XX:+UseParallelGC", "-XX:TieredStopAtLevel=1"} <= set(command[:main])
    assert "-XX:+UseG1GC" not in command

    settings = Settings(home=tmp_path, kafka_jvm_options="-XX:+UseG1GC  -XX:MaxGCPauseMillis=20")
    formatting = Kafka(settings).java_command("kafka.tools.StorageTool", "format")
    main = formatting.index("kafka.tools.StorageTool")
    assert {"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"} <= set(formatting[:main])
    assert not {"-XX:+UseParallelGC", "-XX:TieredStopAtLevel=1"} & set(formatting)
    assert formatting[main + 1:] == ["format"]


@pytest.mark.stack
def test_probe_answers_on_the_running_broker(settings: Settings) -> None:
    Kafka(settings).probe()  # the admin client comes from streams.runtime.clients; no NotReady


def test_probe_is_not_ready_while_the_port_answers_but_no_broker_does(tmp_path) -> None:
    with socket.socket() as listener:  # the port is open, but nothing speaks Kafka on it
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        settings = Settings(home=tmp_path, bind_host="127.0.0.1", kafka_port=listener.getsockname()[1])
        with pytest.raises(NotReady, match="metadata request failed"):
            Kafka(settings).probe()


def test_a_started_cluster_node_waits_until_it_lists_every_node(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`topics create` right after `stack up --brokers 3` sized replication by the brokers one node knew."""
    import types

    import stack.kafka
    import streams.runtime.clients

    known = {1: object(), 2: object()}
    answer = types.SimpleNamespace(list_topics=lambda timeout: types.SimpleNamespace(brokers=known))
    monkeypatch.setattr(stack.kafka, "accepts_connections", lambda host, port: True)
    monkeypatch.setattr(streams.runtime.clients, "make_admin", lambda settings, **overrides: answer)
    node = Kafka(Settings(home=tmp_path, kafka_brokers=3), node=1)
    node.probe()  # `status`: this node answers and is registered
    with pytest.raises(NotReady, match="lists 2 of the cluster's 3 brokers"):
        node.probe_started()
    known[3] = object()
    node.probe_started()
