"""Every topic created up front with one partition count, and checked before a worker starts.

Per-session order needs every topic of a session's path to have the same partition count, and with
broker auto-creation off nothing creates topics right by itself; so the project creates them all
(the list is ``streams.pipeline.TOPICS``), the same way, and the worker explains any drift instead of
failing later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import Settings
from streams.pipeline import TOPICS, topic_names
from streams.runtime.clients import make_admin

# Dead letters keep the original bytes (up to the inbound limit) plus context.
MAX_MESSAGE_BYTES = {"inbound": 2 * 1024 * 1024, "deadletter": 4 * 1024 * 1024}


@dataclass
class TopicProblem:
    topic: str
    problem: str


def replicas_for(settings: Settings, brokers: int) -> int:
    """Replicas per topic: the setting, else as many as the cluster allows up to 3."""
    return settings.replication_factor or max(1, min(3, brokers))


def topic_specs(settings: Settings, replicas: int | None = None) -> list[NewTopic]:
    """The pipeline's topics; with 3+ replicas an acks=all write needs 2 of them (min.insync.replicas)."""
    t = settings.topics
    replicas = replicas or settings.replication_factor or 1
    specs = []
    for short in TOPICS:
        config = {"retention.ms": str(settings.retention_ms)}
        if replicas >= 3:
            config["min.insync.replicas"] = "2"
        if short in MAX_MESSAGE_BYTES:
            config["max.message.bytes"] = str(MAX_MESSAGE_BYTES[short])
        specs.append(
            NewTopic(
                getattr(t, short),
                num_partitions=settings.partitions,
                replication_factor=replicas,
                config=config,
            )
        )
    return specs


def admin(settings: Settings) -> AdminClient:
    return make_admin(settings)


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing topics; returns topic -> 'created' | 'exists'. Idempotent."""
    client = admin(settings)
    metadata = client.list_topics(timeout=timeout_s)
    existing = set(metadata.topics)
    all_specs = topic_specs(settings, replicas_for(settings, len(metadata.brokers)))
    specs = [s for s in all_specs if s.topic not in existing]
    result = {s.topic: "exists" for s in all_specs if s.topic in existing}
    if specs:
        for name, future in client.create_topics(specs, operation_timeout=timeout_s).items():
            try:
                future.result()
                result[name] = "created"
            except KafkaException as exc:
                if exc.args[0].code() == 36:  # TOPIC_ALREADY_EXISTS: a concurrent creator won
                    result[name] = "exists"
                else:
                    raise
        _wait_visible(client, [s.topic for s in specs], settings.partitions, timeout_s)
    return result


def delete_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Delete this namespace's topics (those that exist); returns them. The namespace's consumer group
    goes too: the broker drops a group's offsets with their topics, then the emptied group.

    For throw-away namespaces (a bench run's ``bench-<id>.``, a replay's ``replay-<name>.`` once
    evaluated): a broker keeps every partition's log and index in memory, and 1,654 leftover bench
    topics (9,821 partitions) filled a 512 MiB broker heap until it ran a full GC every 6.5 s, 0.3-0.8 s
    each, stalling every turn."""
    if not settings.topic_prefix:
        raise ValueError("refusing to delete the topics of the live namespace (no topic prefix)")
    client = admin(settings)
    existing = set(client.list_topics(timeout=timeout_s).topics)
    names = [name for name in topic_names(settings) if name in existing]
    for future in (client.delete_topics(names, operation_timeout=timeout_s).values() if names else ()):
        future.result()
    _wait_gone(client, names, timeout_s)
    return names


def _wait_gone(client: AdminClient, topics: list[str], timeout_s: float) -> None:
    """The controller confirms a deletion before every broker's metadata drops the topics; a replay
    run again at once would find them "existing" and then lose them. Wait (bounded) until unlisted."""
    _wait_for_metadata(client, timeout_s, lambda listed: [t for t in topics if t in listed],
                       "topics deleted but still listed")


def _wait_visible(client: AdminClient, topics: list[str], partitions: int, timeout_s: float) -> None:
    """A just-started broker can confirm a creation before its metadata lists the topic; a worker
    started right after would then refuse to run. Wait (bounded) until every topic is listed."""
    _wait_for_metadata(
        client, timeout_s,
        lambda listed: [t for t in topics if t not in listed or len(listed[t].partitions) != partitions],
        "topics created but not visible",
    )


def _wait_for_metadata(client: AdminClient, timeout_s: float, unsettled: Callable[[dict[str, Any]], list[str]],
                       failure: str) -> None:
    """Ask the broker's metadata again every 100 ms until ``unsettled(listed topics)`` is empty."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = unsettled(client.list_topics(timeout=timeout_s).topics)
        if not left:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{failure} after {timeout_s:.0f} s: {', '.join(left)}")
        time.sleep(0.1)


def check_topics(settings: Settings, timeout_s: float = 15.0) -> list[TopicProblem]:
    """What is wrong with the topics a worker needs (empty when all is well)."""
    metadata = admin(settings).list_topics(timeout=timeout_s)
    replicas = replicas_for(settings, len(metadata.brokers))
    problems = []
    for spec in topic_specs(settings, replicas):
        topic = metadata.topics.get(spec.topic)
        if topic is None or topic.error is not None:
            problems.append(TopicProblem(spec.topic, "missing: run `chatstream topics create`"))
        elif len(topic.partitions) != settings.partitions:
            problems.append(
                TopicProblem(
                    spec.topic,
                    f"has {len(topic.partitions)} partitions, settings say {settings.partitions}: every topic "
                    "must have the same count (per-session order depends on it)",
                )
            )
        elif (found := min(len(p.replicas) for p in topic.partitions.values())) < replicas:
            problems.append(
                TopicProblem(
                    spec.topic,
                    f"has {found} replicas, the cluster of {len(metadata.brokers)} brokers wants {replicas}: "
                    "recreate it (or set CHATSTREAM_REPLICATION_FACTOR)",
                )
            )
    return problems
