"""A stand-in for confluent_kafka.Consumer that behaves like librdkafka where the runtime relies on it:
rebalance callbacks run inside ``consume``/``close`` on the calling thread, paused partitions
deliver nothing, commits are recorded with their offsets."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

from confluent_kafka import TopicPartition


class Msg:
    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None = None, value: bytes | None = b"") -> None:
        self._t, self._p, self._o, self._k, self._v = topic, partition, offset, key, value

    def topic(self) -> str: return self._t
    def partition(self) -> int: return self._p
    def offset(self) -> int: return self._o
    def key(self) -> bytes | None: return self._k
    def value(self) -> bytes | None: return self._v
    def headers(self) -> list: return []
    def error(self) -> None: return None
    def timestamp(self) -> tuple[int, int]: return (1, 1_700_000_000_000)


class FakeConsumer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queued: dict[tuple[str, int], collections.deque[Msg]] = collections.defaultdict(collections.deque)
        self.next_offset: dict[tuple[str, int], int] = collections.defaultdict(int)
        self.assignment: set[tuple[str, int]] = set()
        self.paused: set[tuple[str, int]] = set()
        self.pause_calls: list[set[tuple[str, int]]] = []
        self.commits: list[tuple[dict[tuple[str, int], int], bool]] = []
        self.pending_rebalances: collections.deque[tuple[set, set]] = collections.deque()
        self.revoke_returned = threading.Event()
        self.on_assign: Callable | None = None
        self.on_revoke: Callable | None = None
        self.closed = False
        self.rebalance_after_fetch = False
        # a real (eager) rebalance: the new assignment comes a round trip after the revocation, so a
        # call that does not wait serves only the revocation; one that waits serves both
        self.one_rebalance_per_call = False
        self.all: dict[tuple[str, int], list[Msg]] = collections.defaultdict(list)
        self.consume_threads: set[str] = set()
        self.seeks: list[tuple[tuple[str, int], int]] = []
        self.open = threading.Event()  # cleared: consume waits (a test lines up records and rebalances)
        self.open.set()

    # --- test controls ---------------------------------------------------------------------------
    def produce(self, topic: str, partition: int, key: bytes | None, n: int = 1) -> list[Msg]:
        out = []
        with self.lock:
            for _ in range(n):
                tp = (topic, partition)
                msg = Msg(topic, partition, self.next_offset[tp], key)
                self.next_offset[tp] += 1
                self.queued[tp].append(msg)
                self.all[tp].append(msg)
                out.append(msg)
        return out

    def rebalance(self, revoke: set[tuple[str, int]], assign: set[tuple[str, int]]) -> None:
        """Performed inside the next ``consume`` call, like librdkafka serves callbacks."""
        self.pending_rebalances.append((revoke, assign))

    def committed(self, partitions: list[TopicPartition] | None = None, timeout: float | None = None):  # type: ignore[no-untyped-def]
        """Test view: the last committed offset per partition; with ``partitions``: the Consumer API."""
        last: dict[tuple[str, int], int] = {}
        for offsets, _ in self.commits:
            last.update(offsets)
        if partitions is None:
            return last
        return [TopicPartition(p.topic, p.partition, last.get((p.topic, p.partition), -1001)) for p in partitions]

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None, cached: bool = False):  # type: ignore[no-untyped-def]
        with self.lock:
            return 0, self.next_offset[(partition.topic, partition.partition)]

    # --- the Consumer API used by the runtime ---------------------------------------------------------
    def subscribe(self, topics: list[str], on_assign: Callable, on_revoke: Callable) -> None:
        self.topics = topics
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assignment = {(p.topic, p.partition) for p in partitions}

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        self.consume_threads.add(threading.current_thread().name)
        self.open.wait()
        if self.rebalance_after_fetch and self.pending_rebalances:
            # librdkafka may hand out records it fetched before a rebalance op it serves in the same
            # call, when the call may take several; a call for one returns as soon as it has it, so
            # the rebalance waits for the next call
            out = self._take(num_messages)
            if out and num_messages == 1:
                return out
            self._serve_rebalances()
            return out
        self._serve_rebalances(waits=timeout > 0)
        out = self._take(num_messages)
        if not out:
            time.sleep(min(timeout, 0.01))
        return out

    def _serve_rebalances(self, waits: bool = True) -> None:
        while self.pending_rebalances:
            revoke, assign = self.pending_rebalances.popleft()
            split = self.one_rebalance_per_call and not waits and revoke and assign
            if split:
                self.pending_rebalances.appendleft((set(), assign))
                assign = set()
            if revoke:
                self.on_revoke(self, [TopicPartition(t, p) for t, p in sorted(revoke)])
                self.assignment -= revoke
                self.paused -= revoke
                self.revoke_returned.set()
            if assign:
                self.assignment |= assign
                self.on_assign(self, [TopicPartition(t, p) for t, p in sorted(assign)])
                with self.lock:  # a new assignment reads from the committed offset
                    for tp in assign:
                        start = self.committed().get(tp, 0)
                        self.queued[tp] = collections.deque(m for m in self.all[tp] if m.offset() >= start)
            if split:
                return

    def _take(self, num_messages: int) -> list[Msg]:
        out: list[Msg] = []
        with self.lock:
            for tp in sorted(self.assignment - self.paused):
                queue = self.queued[tp]
                while queue and len(out) < num_messages:
                    out.append(queue.popleft())
        return out

    def seek(self, partition: TopicPartition) -> None:
        tp = (partition.topic, partition.partition)
        start = max(partition.offset, 0)
        self.seeks.append((tp, partition.offset))
        with self.lock:
            self.queued[tp] = collections.deque(m for m in self.all[tp] if m.offset() >= start)

    def pause(self, partitions: list[TopicPartition]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self.pause_calls.append(keys)
        self.paused |= keys

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(({(p.topic, p.partition): p.offset for p in offsets}, asynchronous))

    def close(self) -> None:
        if self.assignment and self.on_revoke is not None:
            self.on_revoke(self, [TopicPartition(t, p) for t, p in sorted(self.assignment)])
        self.assignment = set()
        self.closed = True
