"""A three-broker KRaft cluster loses a broker mid-stream, gets it back, then restarts all three in turn.

The cluster (`stack up --brokers 3`, ports 22092/22094/22096, controllers 22093/22095/22097, state in
``.chatstream/cluster``) replaces the fault stack's single broker; Redis and Weaviate are the fault
stack's. Topics have 3 replicas and ``min.insync.replicas=2``: acks=all writes go on with one broker
down. Each test prints ``FAULT-REPORT`` lines with the pause in replies.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr

from stack.kafka import Kafka, kafka_nodes
from stack.manager import Stack
from streams.config import Settings
from streams.topics import admin, check_topics, create_topics
from tests.faults.conftest import ROOT, FaultStack
from tests.audit import audit_when_done
from tests.faults.outcomes import conversation, report, send_all, wait_count

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

CLUSTER_HOME = ROOT / ".chatstream" / "cluster"
BOOTSTRAP = "127.0.0.1:22092,127.0.0.1:22094,127.0.0.1:22096"


class Cluster:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nodes: list[Kafka] = kafka_nodes(settings)
        self.stack = Stack(settings, out=lambda line: print(f"[cluster] {line}"), services=self.nodes)

    def node(self, broker_id: int) -> Kafka:
        return self.nodes[broker_id - 1]

    def kill(self, broker_id: int) -> None:
        node = self.node(broker_id)
        pid = node.pid()
        assert pid is not None, f"{node.name} is not running"
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while node.is_running():
            assert time.monotonic() < deadline, f"{node.name} survived SIGKILL"
            time.sleep(0.05)

    def leaders(self, topics: list[str]) -> Counter:
        """How many partitions of ``topics`` each broker leads."""
        metadata = admin(self.settings).list_topics(timeout=10)
        return Counter(p.leader for t in topics for p in metadata.topics[t].partitions.values())

    def wait_in_sync(self, topics: list[str], timeout_s: float = 120) -> float:
        """Until every partition of ``topics`` has all three replicas in sync; returns seconds waited."""
        began = time.monotonic()
        while True:
            metadata = admin(self.settings).list_topics(timeout=10)
            lagging = [
                (t, p) for t in topics for p, part in metadata.topics[t].partitions.items() if len(part.isrs) < 3
            ]
            if not lagging:
                return time.monotonic() - began
            assert time.monotonic() - began < timeout_s, f"replicas not back in sync: {lagging[:5]}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(fault_stack: FaultStack) -> Iterator[Cluster]:
    settings = fault_stack.settings.derive(
        home=CLUSTER_HOME, kafka_brokers=3, kafka_port=22092, kafka_controller_port=22093,
        kafka_bootstrap=BOOTSTRAP, kafka_heap="384m",
    )
    cluster = Cluster(settings)
    cluster.stack.up()
    try:
        yield cluster
    finally:
        if os.environ.get("CHATSTREAM_FAULTS_KEEP_STACK") != "1":
            cluster.stack.down()


@dataclass
class ReplyClock:
    """Samples how many replies arrived, to measure the longest pause around a fault."""

    client: object
    samples: list[tuple[float, int]] = field(default_factory=list)
    task: asyncio.Task | None = None

    def start(self) -> "ReplyClock":
        async def run() -> None:
            while True:
                self.samples.append((time.monotonic(), len(self.client.reply_order)))  # type: ignore[attr-defined]
                await asyncio.sleep(0.05)

        self.task = asyncio.create_task(run())
        return self

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def longest_pause(self, after: float, until: float) -> float:
        """Longest stretch without a new reply between two moments (while replies were still due)."""
        longest, last_change, last_count = 0.0, after, None
        for at, count in self.samples:
            if at < after or at > until:
                continue
            if last_count is None or count != last_count:
                longest = max(longest, at - last_change)
                last_change, last_count = at, count
        return longest


def cluster_pipeline(cluster: Cluster, fault_stack: FaultStack, llm) -> Settings:  # type: ignore[no-untyped-def]
    run = uuid.uuid4().hex[:8]
    settings = fault_stack.settings.derive(
        kafka_bootstrap=BOOTSTRAP, kafka_brokers=3,
        topic_prefix=f"cluster-{run}.", consumer_group=f"cluster-{run}", llm_base_url=llm.base_url,
        llm_api_key=SecretStr("test-key"), llm_timeout_s=5.0, rate_limit_per_minute=1e6,
        rate_limit_burst=1_000_000, max_in_flight=64, kafka_session_timeout_s=8.0,
    )
    create_topics(settings)
    deadline = time.monotonic() + 30
    while True:
        # a new topic reaches each broker's metadata a moment apart: the check may have asked one that
        # knows it and the next client another that does not yet
        problems = check_topics(settings)
        inbound = None if problems else admin(settings).list_topics(timeout=10).topics.get(settings.topics.inbound)
        if inbound is not None and inbound.partitions:
            break
        assert time.monotonic() < deadline, problems or f"{settings.topics.inbound} not in a new client's metadata"
        time.sleep(0.2)
    assert {len(p.replicas) for p in inbound.partitions.values()} == {3}
    return settings


async def test_kill_9_the_busiest_leader_then_bring_it_back(cluster, fault_stack, llm, workers, client_for) -> None:
    llm.script(latency_ms=300)
    settings = cluster_pipeline(cluster, fault_stack, llm)
    topics = settings.topics.all()
    workers.start(settings)
    client = await client_for(settings)
    clock = ReplyClock(client).start()
    requests = conversation(sessions=50, turns_per_session=10)
    sender = asyncio.create_task(send_all(client, requests))
    await wait_count(client, requests, 100, timeout_s=120)

    victim, led = cluster.leaders(topics).most_common(1)[0]
    killed_at, replied_before = time.monotonic(), len(client.reply_order)
    cluster.kill(victim)
    assert replied_before < len(requests), "the kill must hit turns in flight"
    await sender
    await wait_count(client, requests, replied_before + 50, timeout_s=120)
    flowing_at = time.monotonic()
    pause = clock.longest_pause(killed_at - 1, flowing_at)

    restarted_at = time.monotonic()
    cluster.stack.up([cluster.node(victim).name])
    catch_up = cluster.wait_in_sync(topics)
    rejoin_s = time.monotonic() - restarted_at
    result = await audit_when_done(client, requests, timeout_s=300)
    clock.stop()
    back = cluster.leaders(topics)

    report(f"3 brokers: kill -9 broker {victim} (led {led} of {sum(back.values())} partitions; 500 turns, "
           f"50 sessions, 300 ms LLM)", f"longest pause in replies {pause:.1f} s, then all came in order; "
           f"broker back and all replicas in sync {rejoin_s:.1f} s after restart (catch-up {catch_up:.1f} s)",
           result, flowing_at - killed_at)
    result.assert_clean()


async def test_rolling_restart_of_all_three_under_load(cluster, fault_stack, llm, workers, client_for) -> None:
    llm.script(latency_ms=300)
    settings = cluster_pipeline(cluster, fault_stack, llm)
    topics = settings.topics.all()
    workers.start(settings)
    client = await client_for(settings)
    clock = ReplyClock(client).start()
    requests = conversation(sessions=50, turns_per_session=12)
    began = time.monotonic()
    sender = asyncio.create_task(send_all(client, requests))
    await wait_count(client, requests, 60, timeout_s=120)

    restarts: list[str] = []
    for node in cluster.nodes:  # one at a time: stop (SIGTERM, controlled shutdown), start, wait in sync
        t0 = time.monotonic()
        cluster.stack.down([node.name])
        cluster.stack.up([node.name])
        synced = cluster.wait_in_sync(topics)
        restarts.append(f"{node.name} {time.monotonic() - t0:.1f} s")
    rolled_at = time.monotonic()
    assert len(client.reply_order) < len(requests), "the restarts must happen under load"
    await sender
    result = await audit_when_done(client, requests, timeout_s=300)
    clock.stop()
    pause = clock.longest_pause(began, rolled_at)

    report("3 brokers: rolling restart of all three (600 turns, 50 sessions, 300 ms LLM)",
           f"longest pause in replies {pause:.1f} s; restart+in-sync per node: {', '.join(restarts)} "
           f"(last sync wait {synced:.1f} s)", result, None)
    result.assert_clean()
