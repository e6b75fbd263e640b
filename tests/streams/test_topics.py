"""Every topic created up front with one partition count; drift explained before a worker starts."""

from __future__ import annotations

import time
import uuid

import pytest

from streams.cli import main
from streams.config import TOPIC_NAMES, Settings
from streams.topics import admin, check_topics, create_topics

pytestmark = pytest.mark.stack


def namespace(**overrides) -> Settings:
    return Settings().derive(topic_prefix=f"topics-{uuid.uuid4().hex[:8]}.", **overrides)


def test_create_is_idempotent_and_check_passes() -> None:
    settings = namespace()
    first = create_topics(settings)
    assert set(first) == set(settings.topics.all()) and set(first.values()) == {"created"}
    assert set(create_topics(settings).values()) == {"exists"}
    assert check_topics(settings) == []
    configs = admin(settings).list_topics(timeout=10).topics
    assert all(len(configs[t].partitions) == settings.partitions for t in settings.topics.all())


def test_missing_and_mismatched_topics_are_explained_and_the_worker_refuses(monkeypatch, capsys) -> None:
    settings = namespace()
    assert {p.topic for p in check_topics(settings)} == set(settings.topics.all())
    assert all("chatstream topics create" in p.problem for p in check_topics(settings))
    create_topics(settings.derive(partitions=3))
    problems = check_topics(settings)
    assert len(problems) == len(TOPIC_NAMES) and all("has 3 partitions, settings say 6" in p.problem for p in problems)
    monkeypatch.setenv("CHATSTREAM_TOPIC_PREFIX", settings.topic_prefix)
    assert main(["topics", "check"]) == 1
    assert "has 3 partitions" in capsys.readouterr().out
    assert main(["worker"]) == 2, "the worker refuses to start on wrong topics"
    assert "topics are not right" in capsys.readouterr().err


def test_deleting_a_namespace_never_touches_the_live_topics() -> None:
    from streams.topics import delete_topics

    with pytest.raises(ValueError, match="live namespace"):
        delete_topics(Settings(topic_prefix=""))


def test_a_namespace_is_deleted_with_its_consumer_groups_and_the_live_one_is_refused(capsys) -> None:
    """`topics delete --prefix`: a replay's topics go (they fill a broker's heap), and with them its group."""
    from confluent_kafka import Consumer, TopicPartition

    live, replay = namespace(), namespace()
    create_topics(live)
    create_topics(replay)
    group = f"{replay.topic_prefix}chatstream"  # a replay's worker group
    consumer = Consumer({"bootstrap.servers": replay.kafka_bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(replay.topics.inbound, 0, 0)], asynchronous=False)
    consumer.close()

    import redis

    from processors.session import redis_key_prefix

    kv = redis.Redis.from_url(live.redis_connection_url)
    marker = {ns.topic_prefix: f"{redis_key_prefix(ns.topic_prefix)}replied:m1" for ns in (live, replay)}
    for name in marker.values():
        kv.set(name, "1", ex=600)

    assert main(["topics", "delete", "--prefix", replay.topic_prefix]) == 0
    out = capsys.readouterr().out
    assert f"deleted {len(TOPIC_NAMES)} topics ({replay.topic_prefix}*)" in out
    assert "deleted 1 Redis keys of the namespace" in out, out  # its sessions and reply markers went too
    assert not kv.exists(marker[replay.topic_prefix]) and kv.exists(marker[live.topic_prefix])
    kv.delete(marker[live.topic_prefix])
    kv.close()
    client = admin(live)
    listed = client.list_topics(timeout=10).topics
    assert not [t for t in listed if t.startswith(replay.topic_prefix)]
    assert set(live.topics.all()) <= set(listed)  # another namespace stays
    deadline = time.monotonic() + 10  # the broker drops the group's offsets with the topics, then the group
    while group in {g.group_id for g in client.list_consumer_groups(request_timeout=10).result().valid}:
        assert time.monotonic() < deadline, f"{group} outlived its namespace's topics"
        time.sleep(0.2)

    for refused in ("", "no-dot"):
        assert main(["topics", "delete", "--prefix", refused]) == 2
        assert "refusing to delete" in capsys.readouterr().err


def test_a_deletion_returns_only_once_the_broker_no_longer_lists_the_topics() -> None:
    """The controller confirms before the brokers' metadata catches up; a replay run again at once must
    not find its old topics "existing" and then lose them."""
    from types import SimpleNamespace

    from streams.topics import _wait_gone

    class LaggingAdmin:
        calls = 0

        def list_topics(self, timeout: float) -> SimpleNamespace:
            self.calls += 1
            return SimpleNamespace(topics={"ns.chat.inbound": object()} if self.calls < 3 else {})

    client = LaggingAdmin()
    _wait_gone(client, ["ns.chat.inbound"], timeout_s=5)  # type: ignore[arg-type]
    assert client.calls == 3
    with pytest.raises(RuntimeError, match="still listed"):
        _wait_gone(type("Stuck", (), {"list_topics": lambda self, timeout: SimpleNamespace(topics={"t": 1})})(), ["t"], 0.2)  # type: ignore[arg-type]
