"""The one place that configures and builds Kafka clients for the whole project.

Producers: acks=all and idempotence, so what Kafka acknowledged is neither lost nor duplicated by a
broker restart. Group consumers: no auto-commit and no auto offset store (the runtime commits explicit
offsets of finished work only), read_committed. Tails: group-less readers that assign partitions
themselves and never commit. Admin: topic creation/checks and lag. Watermarks: asked again while a
partition has no leader yet (a topic just created, a broker just restarted), so no reader fails on that moment.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

if TYPE_CHECKING:
    from streams.producer import AsyncProducer

log = logging.getLogger(__name__)

# Producers of the pipeline write dead letters, which carry a whole original record (chat.inbound
# takes up to 2 MiB) plus its context; the topics themselves set the real limits (streams/topics.py).
PIPELINE_MAX_REQUEST = {"message.max.bytes": 8 * 1024 * 1024}


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        # no lingering: every record of a turn is on its critical path (request -> enriched -> retrieved
        # -> the first provisional piece), and a lone record waited the whole linger at each hop
        # (measured on a loaded 2-core machine: produce-to-consume p50 4.1 ms at 2 ms, 2.0 ms at 0).
        # Under load batches still form by themselves: librdkafka fills the next request while up to
        # five are in flight. The pipeline's producers take ``settings.kafka_linger_ms``.
        "linger.ms": 0,
        "batch.num.messages": 10000,
        # no compression: every consumer must then bring a codec library
        "compression.type": "none",
        "message.timeout.ms": 120000,
        "queue.buffering.max.messages": 200000,
        "socket.keepalive.enable": True,
        "reconnect.backoff.max.ms": 2000,
    }
    config.update(overrides)
    return config


def make_producer(settings: Any, **overrides: Any) -> "AsyncProducer":
    from streams.producer import AsyncProducer

    return AsyncProducer(settings.kafka_bootstrap, **{"linger.ms": getattr(settings, "kafka_linger_ms", 0.0), **overrides})


def _log_commit(err: Any, partitions: Any) -> None:
    if err is not None:  # e.g. the partition was revoked meanwhile: its next owner re-reads, markers dedup
        log.warning("offset commit failed (records will be read again): %s", err)


def consumer_config(settings: Any, group: str, **overrides: Any) -> dict[str, Any]:
    """A group consumer whose offsets move only when the runtime commits finished work."""
    session_ms = int(getattr(settings, "kafka_session_timeout_s", 30.0) * 1000)
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # a worker killed with -9 sends no LeaveGroup: its partitions wait out the session timeout
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": max(500, min(3000, session_ms // 4)),
        # the runtime keeps consuming (paused partitions) while a window is full, so this only
        # bounds a revocation's drain, which shutdown_grace_s bounds far below it
        "max.poll.interval.ms": 300000,
        # a partition assigned or resumed while a fetch waits at the broker joins the next fetch only
        "fetch.wait.max.ms": int(getattr(settings, "kafka_fetch_wait_ms", 100)),
        "reconnect.backoff.max.ms": 2000,
        "on_commit": _log_commit,
    }
    config.update(overrides)
    return config


def make_consumer(settings: Any, group: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(settings, group, **overrides))


def make_tail_consumer(settings: Any, purpose: str, **overrides: Any) -> Consumer:
    """A reader that assigns partitions itself and commits nothing (the group id is never joined)."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": f"chatstream-{purpose}-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "reconnect.backoff.max.ms": 2000,
    }
    config.update(overrides)
    return Consumer(config)


def make_admin(settings: Any, **overrides: Any) -> AdminClient:
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 10000}
    config.update(overrides)
    return AdminClient(config)


def end_offsets_reader(settings: Any) -> Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]]:
    """High watermarks of many partitions in one ``list_offsets`` request (the worker's staged stop).

    An admin client of its own: a consumer's watermark queries go one partition at a time on the
    connection its fetch long-poll occupies, about half a second each.
    """
    admin = make_admin(settings)

    def read(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        futures = admin.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions},
                                     request_timeout=10)
        return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}

    return read


_NO_LEADER_YET = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})


def _no_leader_yet(exc: BaseException) -> bool:
    """A partition without a serving leader for now: a topic just created, or a broker just restarted."""
    if not isinstance(exc, KafkaException) or not isinstance(exc.args[0], KafkaError):
        return False
    return exc.args[0].code() in _NO_LEADER_YET or exc.args[0].retriable()


def watermarks(consumer, partition: TopicPartition, timeout_s: float) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """A partition's low and high watermarks, asked again while it has no leader (within ``timeout_s``
    in all: each ask gets only what is left of it)."""
    deadline = time.monotonic() + timeout_s
    for attempt in Retrying(retry=retry_if_exception(_no_leader_yet), stop=stop_after_delay(timeout_s),
                            wait=wait_random_exponential(multiplier=0.05, max=1.0), reraise=True):
        with attempt:
            return consumer.get_watermark_offsets(partition, timeout=max(0.05, deadline - time.monotonic()))
    raise AssertionError("unreachable: tenacity either returns or re-raises")
