"""The consumer runtime on the real Kafka: a second consumer joins while turns run; the first one
finishes the revoked partitions' running turns and commits them before they move, so no record is
handled twice and none is lost."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from streams.config import Settings
from streams.runtime.clients import make_admin, make_consumer, producer_config
from streams.runtime.consumer import ConsumerRuntime, run_until
from streams.runtime.lane import Lane

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

PARTITIONS = 4
RECORDS = 120


async def until(condition, timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def make_topic(settings: Settings) -> str:
    topic = f"runtime-test-{uuid.uuid4().hex[:8]}"
    admin = make_admin(settings)
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]).values():
        future.result(30)
    return topic


async def test_a_joining_consumer_gets_partitions_only_after_their_running_turns_are_committed() -> None:
    settings = Settings(kafka_session_timeout_s=10.0)
    topic = make_topic(settings)
    group = f"runtime-test-{uuid.uuid4().hex[:8]}"
    producer = Producer(producer_config(settings.kafka_bootstrap))
    for i in range(RECORDS):
        producer.produce(topic, value=str(i).encode(), key=f"s{i % 12}".encode())
    assert producer.flush(30) == 0

    handled: list[tuple[str, int, int]] = []  # (who, partition, offset)
    running: dict[str, int] = {"first": 0, "second": 0}

    def handler(who: str):
        async def handle(msg: Any) -> None:
            running[who] += 1
            try:
                await asyncio.sleep(0.25)  # a turn takes a while: the rebalance finds some running
                handled.append((who, msg.partition(), msg.offset()))
            finally:
                running[who] -= 1

        return handle

    def runtime(who: str) -> ConsumerRuntime:
        lane = Lane(who, [topic], handler(who), max_in_flight=4, chain_key=lambda m: (m.partition(), m.key()))
        return ConsumerRuntime(make_consumer(settings, group), [lane], grace_s=15.0, commit_interval_s=0.5)

    stop = asyncio.Event()
    first = runtime("first")
    tasks = [asyncio.create_task(run_until(first, stop))]
    try:
        await until(lambda: running["first"] >= 2 and len(handled) >= 2, 60, "the first consumer running turns")
        second = runtime("second")
        tasks.append(asyncio.create_task(run_until(second, stop)))
        await until(lambda: bool(second.assignment), 60, "the second consumer's assignment")
        await until(lambda: len(handled) >= RECORDS, 90, "every record handled")
        await asyncio.sleep(1.0)  # anything handled twice would show up now
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    seen = [(p, o) for _, p, o in handled]
    assert len(seen) == len(set(seen)) == RECORDS, "a record was handled twice or not at all"
    assert {who for who, _, _ in handled} == {"first", "second"}, "both consumers took part"
    check = make_consumer(settings, group)
    try:
        committed = check.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    finally:
        check.close()
    ends = {p: 1 + max(o for pp, o in seen if pp == p) for p in range(PARTITIONS) if any(pp == p for pp, _ in seen)}
    assert {tp.partition: tp.offset for tp in committed if tp.partition in ends} == ends
