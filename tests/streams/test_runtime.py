"""The consumer runtime without Kafka: a fake consumer that serves rebalance callbacks inside
``consume`` on the consume thread, as librdkafka does."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.runtime.consumer import ConsumerRuntime
from streams.runtime.lane import Lane, by_partition, by_session
from tests.streams.fake_kafka import FakeConsumer

A, B = "t.a", "t.b"


async def until(condition, timeout_s: float = 5.0) -> None:
    """Wait for a condition the runtime reaches by itself (a readiness check, not a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


class Recorder:
    """A handler that records what it ran, can be held, and counts concurrency per session."""

    def __init__(self) -> None:
        self.done: list[tuple[str, int, int]] = []
        self.started: list[tuple[str, int, int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.per_key_running: dict[Any, int] = {}
        self.overlap = False

    async def __call__(self, msg: Any) -> None:
        key = (msg.topic(), msg.key())
        self.started.append((msg.topic(), msg.partition(), msg.offset()))
        self.per_key_running[key] = self.per_key_running.get(key, 0) + 1
        self.overlap |= self.per_key_running[key] > 1
        await self.gate.wait()
        await asyncio.sleep(0)
        self.per_key_running[key] -= 1
        self.done.append((msg.topic(), msg.partition(), msg.offset()))


def runtime_for(consumer: FakeConsumer, *lanes: Lane, **kw: Any) -> ConsumerRuntime:
    kw.setdefault("grace_s", 5.0)
    kw.setdefault("commit_interval_s", 0.05)
    return ConsumerRuntime(consumer, list(lanes), idle_wait_s=0.01, **kw)


async def test_records_run_in_session_order_and_finished_offsets_are_committed() -> None:
    consumer = FakeConsumer()
    handler = Recorder()
    lane = Lane("a", [A], handler, max_in_flight=8, chain_key=by_session)
    runtime = runtime_for(consumer, lane)
    for p in (0, 1):
        for s in range(4):
            consumer.produce(A, p, f"s{p}{s}".encode(), n=5)
    consumer.rebalance(set(), {(A, 0), (A, 1)})
    task = asyncio.create_task(runtime.run())
    await until(lambda: len(handler.done) == 40)
    await until(lambda: consumer.committed() == {(A, 0): 20, (A, 1): 20})
    runtime.request_stop()
    await task
    assert not handler.overlap, "two turns of one session ran at once"
    for p in (0, 1):
        offsets = [o for t, pp, o in handler.done if pp == p]
        # per session the offsets ascend (sessions interleave)
        assert sorted(offsets) == list(range(20))
    assert consumer.closed
    assert any(asynchronous for _, asynchronous in consumer.commits), "periodic commits are asynchronous"
    assert not consumer.commits[-1][1] or consumer.committed() == {(A, 0): 20, (A, 1): 20}
    assert consumer.consume_threads == {"kafka-consume_0"}, "one thread consumes"


async def test_commit_never_passes_a_turn_still_running() -> None:
    consumer = FakeConsumer()
    slow = asyncio.Event()

    async def handle(msg: Any) -> None:
        if msg.offset() == 2:
            await slow.wait()

    lane = Lane("a", [A], handle, max_in_flight=8, chain_key=by_partition_free)
    runtime = runtime_for(consumer, lane)
    consumer.produce(A, 0, None, n=6)
    consumer.rebalance(set(), {(A, 0)})
    task = asyncio.create_task(runtime.run())
    await until(lambda: consumer.committed().get((A, 0)) == 2)
    await asyncio.sleep(0.15)  # several commit intervals pass: offsets 3..5 finished, 2 did not
    assert consumer.committed() == {(A, 0): 2}
    slow.set()
    await until(lambda: consumer.committed().get((A, 0)) == 6)
    runtime.request_stop()
    await task


def by_partition_free(msg: Any) -> Any:
    return msg.offset()  # every record its own chain: they run concurrently


async def test_a_full_lane_pauses_only_its_own_partitions() -> None:
    consumer = FakeConsumer()
    blocked = Recorder()
    blocked.gate.clear()
    flowing = Recorder()
    slow_lane = Lane("slow", [A], blocked, max_in_flight=2, max_backlog=4, chain_key=by_partition_free)
    fast_lane = Lane("fast", [B], flowing, max_in_flight=8)
    runtime = runtime_for(consumer, slow_lane, fast_lane, batch_size=3)
    consumer.produce(A, 0, None, n=100)
    consumer.rebalance(set(), {(A, 0), (B, 0)})
    task = asyncio.create_task(runtime.run())
    await until(lambda: (A, 0) in consumer.paused)
    consumer.produce(B, 0, b"k", n=30)
    await until(lambda: len(flowing.done) == 30)
    assert (B, 0) not in consumer.paused and all((B, 0) not in call for call in consumer.pause_calls)
    # bounded: the window (2 running, 8 unacked) plus the backlog, not the 100 produced
    assert len(blocked.started) == 2 and slow_lane.window.in_flight + len(slow_lane.backlog) <= 8 + 4 + 3
    blocked.gate.set()
    await until(lambda: len(blocked.done) == 100)
    assert (A, 0) not in consumer.paused, "resumed once the backlog drained"
    await until(lambda: consumer.committed().get((A, 0)) == 100)
    runtime.request_stop()
    await task


async def test_revocation_drains_running_turns_and_commits_before_returning() -> None:
    consumer = FakeConsumer()
    handler = Recorder()
    handler.gate.clear()
    lane = Lane("a", [A], handler, max_in_flight=4, chain_key=by_session)
    assigned: list[set] = []
    runtime = runtime_for(consumer, lane, on_assigned=assigned.append)
    consumer.produce(A, 0, b"s1", n=3)  # one session: one turn runs, two wait for it
    consumer.produce(A, 1, b"s2", n=1)
    consumer.rebalance(set(), {(A, 0), (A, 1)})
    task = asyncio.create_task(runtime.run())
    await until(lambda: len(handler.started) == 2)
    consumer.rebalance({(A, 0), (A, 1)}, {(A, 1)})
    await asyncio.sleep(0.05)
    assert not consumer.revoke_returned.is_set(), "revocation waits for the running turns"
    handler.gate.set()
    await until(consumer.revoke_returned.is_set)
    # committed synchronously inside on_revoke, covering every admitted turn: the session's two
    # waiting turns ran to the end too, so nothing finished is redone by the next owner
    sync = [offsets for offsets, asynchronous in consumer.commits if not asynchronous]
    assert sync and sync[0] == {(A, 0): 3, (A, 1): 1}
    assert [d for d in handler.done if d[1] == 0] == [(A, 0, 0), (A, 0, 1), (A, 0, 2)]
    assert assigned == [{(A, 0), (A, 1)}], "re-assigning a partition just revoked is not a take-over"
    consumer.produce(A, 1, b"s2", n=1)
    await until(lambda: (A, 1, 1) in handler.done)
    runtime.request_stop()
    await task
    assert consumer.committed()[(A, 1)] == 2
    assert len(handler.done) == len(set(handler.done)) == 5, "each record once"


async def test_revocation_leaves_the_backlog_to_the_next_owner() -> None:
    consumer = FakeConsumer()
    handler = Recorder()
    handler.gate.clear()
    lane = Lane("a", [A], handler, max_in_flight=1, max_backlog=50, chain_key=by_partition_free)
    lane.window = type(lane.window)(1, on_release=lane._released, max_unacked=2)  # room for 2 admitted only
    runtime = runtime_for(consumer, lane)
    consumer.produce(A, 0, None, n=6)
    consumer.rebalance(set(), {(A, 0)})
    task = asyncio.create_task(runtime.run())
    await until(lambda: len(handler.started) == 1 and len(lane.backlog) >= 3)
    consumer.rebalance({(A, 0)}, set())
    await asyncio.sleep(0.05)
    handler.gate.set()
    await until(consumer.revoke_returned.is_set)
    sync = [offsets for offsets, asynchronous in consumer.commits if not asynchronous]
    assert sync[0] == {(A, 0): 2}, "the two admitted turns finished and were committed"
    assert [o for _, _, o in handler.done] == [0, 1], "the backlog was not started: the next owner reads it"
    runtime.request_stop()
    await task


async def test_stop_finishes_in_flight_turns_commits_and_closes() -> None:
    consumer = FakeConsumer()
    handler = Recorder()
    handler.gate.clear()
    lane = Lane("a", [A], handler, max_in_flight=16)
    runtime = runtime_for(consumer, lane, commit_interval_s=60)
    for s in range(10):
        consumer.produce(A, 0, f"s{s}".encode(), n=1)
    consumer.rebalance(set(), {(A, 0)})
    task = asyncio.create_task(runtime.run())
    await until(lambda: len(handler.started) == 10)
    runtime.request_stop()
    await asyncio.sleep(0.05)
    assert not task.done(), "stop waits for the turns in flight"
    handler.gate.set()
    await asyncio.wait_for(task, 5)
    assert len(handler.done) == 10
    assert consumer.committed() == {(A, 0): 10} and consumer.closed
    assert consumer.commits[0] == ({(A, 0): 10}, False), "the commit at stop is synchronous"


async def test_stop_after_the_grace_period_leaves_unfinished_turns_uncommitted() -> None:
    consumer = FakeConsumer()

    async def stuck(msg: Any) -> None:
        if msg.offset() == 1:
            await asyncio.Event().wait()

    lane = Lane("a", [A], stuck, max_in_flight=4, chain_key=by_partition_free)
    runtime = runtime_for(consumer, lane, grace_s=0.2, commit_interval_s=60)
    consumer.produce(A, 0, None, n=3)
    consumer.rebalance(set(), {(A, 0)})
    task = asyncio.create_task(runtime.run())
    await until(lambda: lane.window.in_flight == 1 and lane.acked.get((A, 0)) == 1)
    runtime.request_stop()
    await asyncio.wait_for(task, 5)
    assert consumer.committed() == {(A, 0): 1}, "offset 1 never finished: it is redone after a restart"


async def test_records_fetched_before_a_revocation_in_the_same_call_are_not_run_twice() -> None:
    consumer = FakeConsumer()
    handler = Recorder()
    handler.gate.clear()
    lane = Lane("a", [A], handler, max_in_flight=1, chain_key=by_session)
    runtime = runtime_for(consumer, lane)
    consumer.produce(A, 0, b"s", n=2)
    consumer.rebalance(set(), {(A, 0)})
    task = asyncio.create_task(runtime.run())
    await until(lambda: len(handler.started) == 1)
    consumer.open.clear()  # line up: no call starts until the records and the rebalance are both there
    await asyncio.sleep(0.05)
    consumer.produce(A, 0, b"s", n=2)  # offsets 2, 3: fetched in the call that serves the rebalance
    consumer.rebalance_after_fetch = True
    consumer.rebalance({(A, 0)}, {(A, 0)})
    consumer.open.set()
    await asyncio.sleep(0.05)
    handler.gate.set()
    await until(lambda: len(handler.done) >= 4)
    await until(lambda: consumer.committed().get((A, 0)) == 4)
    runtime.request_stop()
    await task
    assert sorted(handler.done) == [(A, 0, o) for o in range(4)], "each record exactly once"


async def test_records_of_a_partition_assigned_back_within_one_fetch_are_all_run() -> None:
    """An eager rebalance revokes everything and assigns back what this consumer keeps; the
    revocation and the new assignment can be served in two calls of one fetch. The records read
    after the new assignment are its own: dropping them with the revoked ones lost those turns for
    good once a later record was acked past them (a fault test's kill -9 with a second worker)."""
    consumer = FakeConsumer()
    consumer.one_rebalance_per_call = True
    handler = Recorder()
    lane = Lane("a", [A], handler, max_in_flight=8, chain_key=by_session)
    runtime = runtime_for(consumer, lane)
    consumer.produce(A, 0, b"s", n=3)
    consumer.produce(A, 1, b"t", n=3)
    consumer.rebalance(set(), {(A, 0), (A, 1)})
    task = asyncio.create_task(runtime.run())
    await until(lambda: consumer.committed() == {(A, 0): 3, (A, 1): 3})

    consumer.open.clear()  # line up: the revocation, then the assignment back, then its records
    await asyncio.sleep(0.05)
    consumer.rebalance({(A, 0), (A, 1)}, {(A, 0)})
    consumer.produce(A, 0, b"s", n=5)
    consumer.open.set()
    await until(lambda: len(handler.done) >= 11)
    consumer.produce(A, 0, b"s", n=1)  # a later record: its ack must not pass unrun ones
    await until(lambda: consumer.committed().get((A, 0)) == 9)
    runtime.request_stop()
    await asyncio.wait_for(task, 5)
    assert sorted(o for t, p, o in handler.done if p == 0) == list(range(9)), "each record of A 0 exactly once"


async def test_stop_drains_the_stages_in_order_so_turns_in_flight_are_answered() -> None:
    """Lane A (first stage) produces into B's topic: at stop, A admits nothing more and finishes
    what it admitted, and B keeps consuming until it handled every record A produced for those
    turns; A's backlog (never started) is left for the restart."""
    consumer = FakeConsumer()
    second = Recorder()
    first_started: list[int] = []
    gate = asyncio.Event()

    async def first(msg: Any) -> None:
        first_started.append(msg.offset())
        await gate.wait()
        consumer.produce(B, 0, msg.key(), n=1)  # this stage's output, read by the next stage

    lane_a = Lane("a", [A], first, max_in_flight=4, chain_key=by_partition_free)
    lane_b = Lane("b", [B], second, max_in_flight=4)
    runtime = runtime_for(consumer, lane_a, lane_b, staged_stop=True, commit_interval_s=60, grace_s=30)
    consumer.produce(A, 0, b"s", n=20)
    consumer.rebalance(set(), {(A, 0), (B, 0), (B, 1)})  # B 1 never has a record: nothing to wait for
    task = asyncio.create_task(runtime.run())
    await until(lambda: len(first_started) == 4)
    runtime.request_stop()
    await asyncio.sleep(0.05)
    assert not task.done()
    gate.set()
    await asyncio.wait_for(task, 5)
    ran = len(first_started)
    assert 4 <= ran < 20, "what was admitted finished, the backlog was left"
    assert [off for _, _, off in second.done] == list(range(ran)), "every output of the admitted turns was handled"
    assert consumer.committed() == {(A, 0): ran, (B, 0): ran}



async def test_finished_offsets_are_sent_again_after_a_while_in_case_an_async_commit_failed() -> None:
    # an asynchronous commit that fails after it was sent (a coordinator moving during a broker
    # restart) must not leave the last offsets before traffic stops uncommitted for good
    consumer = FakeConsumer()
    handler = Recorder()
    lane = Lane("a", [A], handler, max_in_flight=8, chain_key=by_session)
    runtime = runtime_for(consumer, lane, recommit_interval_s=0.2)
    consumer.produce(A, 0, b"s0", n=3)
    consumer.rebalance(set(), {(A, 0)})
    task = asyncio.create_task(runtime.run())
    await until(lambda: consumer.committed() == {(A, 0): 3})
    sent = len(consumer.commits)
    consumer.commits.clear()  # as if that commit had failed at the broker
    await until(lambda: consumer.committed() == {(A, 0): 3})  # sent again, nothing new finished meanwhile
    runtime.request_stop()
    await task
    assert sent >= 1 and handler.done == [(A, 0, 0), (A, 0, 1), (A, 0, 2)]
