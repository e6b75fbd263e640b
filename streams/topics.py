"""Every topic created up front with one partition count, and checked before a worker starts.

Faust refuses a table whose changelog has another partition count than its source
(``PartitionsMismatch``) and, with broker auto-creation off, never creates topics right; so the
project creates them all, the same way, and the worker explains any drift instead of failing later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import Settings

# Dead letters keep the original bytes (up to the inbound limit) plus context.
MAX_MESSAGE_BYTES = {"inbound": 2 * 1024 * 1024, "deadletter": 4 * 1024 * 1024}


@dataclass
class TopicProblem:
    topic: str
    problem: str


def topic_specs(settings: Settings) -> list[NewTopic]:
    t = settings.topics
    specs = []
    for short in ("inbound", "enriched", "retrieved", "generated", "outbound", "escalations", "deadletter", "feedback", "deltas"):
        config = {"retention.ms": str(settings.retention_ms)}
        if short in MAX_MESSAGE_BYTES:
            config["max.message.bytes"] = str(MAX_MESSAGE_BYTES[short])
        specs.append(
            NewTopic(
                getattr(t, short),
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                config=config,
            )
        )
    return specs


def admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 10000})


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing topics; returns topic -> 'created' | 'exists'. Idempotent."""
    client = admin(settings)
    existing = set(client.list_topics(timeout=timeout_s).topics)
    specs = [s for s in topic_specs(settings) if s.topic not in existing]
    result = {s.topic: "exists" for s in topic_specs(settings) if s.topic in existing}
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


def _wait_visible(client: AdminClient, topics: list[str], partitions: int, timeout_s: float) -> None:
    """A just-started broker can confirm a creation before its metadata lists the topic; a worker
    started right after would then refuse to run. Wait (bounded) until every topic is listed."""
    deadline = time.monotonic() + timeout_s
    while True:
        listed = client.list_topics(timeout=timeout_s).topics
        missing = [t for t in topics if t not in listed or len(listed[t].partitions) != partitions]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics created but not visible after {timeout_s:.0f} s: {', '.join(missing)}")
        time.sleep(0.1)


def check_topics(settings: Settings, timeout_s: float = 15.0) -> list[TopicProblem]:
    """What is wrong with the topics a worker needs (empty when all is well)."""
    metadata = admin(settings).list_topics(timeout=timeout_s)
    problems = []
    for spec in topic_specs(settings):
        topic = metadata.topics.get(spec.topic)
        if topic is None or topic.error is not None:
            problems.append(TopicProblem(spec.topic, "missing: run `chatstream topics create`"))
        elif len(topic.partitions) != settings.partitions:
            problems.append(
                TopicProblem(
                    spec.topic,
                    f"has {len(topic.partitions)} partitions, settings say {settings.partitions}: every topic "
                    "must have the same count (per-session order and Faust co-partitioning depend on it)",
                )
            )
    return problems
