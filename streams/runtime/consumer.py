"""One consumer, many lanes: batched reads in a thread, back-pressure, ordered commits, rebalances.

Why our own layer and not Faust: Faust's public API gives neither a drain-before-commit on SIGTERM
nor on revocation (the old worker overrode its private ``_schedule_shutdown``), it consumes with a
second Kafka client library (aiokafka), and the edges need group-less tails. This is a small layer
over confluent-kafka's public API only:

* ``Consumer.consume`` runs in one dedicated thread and returns up to ``batch_size`` records that
  are already fetched (waiting only when there are none); the loop hands each to the lane of its
  topic without blocking (``Lane.offer``);
* a lane whose backlog is full has its partitions paused (``Consumer.pause``) and resumed once it
  drained to half; the thread keeps calling ``consume``, so ``max.poll.interval.ms`` never expires
  and a busy stage never stalls the others;
* finished work is committed as explicit offsets (``Consumer.commit(offsets=...)``): asynchronously
  every ``commit_interval_s``, synchronously at revocation and at stop;
* ``on_revoke`` runs inside ``consume`` on the consume thread: it asks the event loop (free while it
  awaits that thread) to stop the revoked partitions' unstarted work, wait up to ``grace_s`` for
  their running turns, and hand back their offsets, which it commits before returning, i.e. before
  the partitions move to another worker;
* ``on_assign`` tells the lanes (and the owner, e.g. the stages' reply-marker recovery).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any, Callable

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from streams.runtime.clients import watermarks
from streams.runtime.lane import TP, Lane

log = logging.getLogger(__name__)


class ConsumerRuntime:
    def __init__(
        self,
        consumer: Any,
        lanes: list[Lane],
        *,
        grace_s: float,
        batch_size: int = 500,
        idle_wait_s: float = 0.2,
        commit_interval_s: float = 1.0,
        recommit_interval_s: float = 10.0,
        on_assigned: Callable[[set[TP]], None] | None = None,
        tick: Callable[[], Any] | None = None,
        tick_interval_s: float = 1.0,
        commits: bool = True,
        staged_stop: bool = False,
        end_offsets: Callable[[list[TP]], dict[TP, int]] | None = None,
    ) -> None:
        self.consumer = consumer
        self.lanes = lanes
        self.grace_s = grace_s
        self.batch_size = batch_size
        self.idle_wait_s = idle_wait_s
        self.commit_interval_s = commit_interval_s
        self.recommit_interval_s = recommit_interval_s
        self._last_full_commit = time.monotonic()
        self.on_assigned = on_assigned
        self.tick = tick
        self.tick_interval_s = tick_interval_s
        self.commits = commits  # False for group-less tails: nothing to commit, no group to commit to
        # lanes are pipeline stages in order, each reading what the one before produces: stop drains
        # them one after the other so turns in flight are answered before exit (``_drain_in_stage_order``)
        self.staged_stop = staged_stop
        # high watermarks of many partitions in one request (an admin client: the consumer's own
        # per-partition queries wait behind its fetch long-poll, ~0.5 s each); default: the consumer's
        self.end_offsets = end_offsets
        self._by_topic: dict[str, Lane] = {}
        for lane in lanes:
            for topic in lane.topics:
                if topic in self._by_topic:
                    raise ValueError(f"topic {topic} is read by two lanes ({self._by_topic[topic].name}, {lane.name})")
                self._by_topic[topic] = lane
        self._loop: asyncio.AbstractEventLoop | None = None
        # one thread owns consume/close (and with them the rebalance callbacks)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-consume")
        self._stop = asyncio.Event()
        self._committed: dict[TP, int] = {}
        self.assignment: set[TP] = set()
        self._last_assigned: set[TP] = set()
        # what the rebalance callbacks served inside the current consume call did (consume thread only)
        self._revoked_in_call: set[TP] = set()
        self._assigned_in_call: set[TP] = set()
        self.paused: set[TP] = set()

    # --- lifecycle -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop pulling; ``run`` then drains, commits and closes. Safe to call more than once."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def subscribe(self) -> None:
        self.consumer.subscribe(list(self._by_topic), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Group-less: read exactly these partitions from their given offsets (tails)."""
        self.consumer.assign(partitions)
        keys = {(p.topic, p.partition) for p in partitions}
        for lane in self.lanes:
            lane.assigned(keys)
        self.assignment = keys

    async def run(self, *, subscribe: bool = True) -> None:
        """Consume until ``request_stop``; then finish in-flight work (up to ``grace_s``), commit, close."""
        self._loop = asyncio.get_running_loop()
        for lane in self.lanes:
            lane.start()
        if subscribe:
            self.subscribe()
        last_commit = last_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                messages = await self._in_thread(self._fetch)
                for msg in messages:
                    self._dispatch(msg)
                self._apply_backpressure()
                now = time.monotonic()
                if self.tick is not None and now - last_tick >= self.tick_interval_s:
                    last_tick = now
                    await self.tick()
                if now - last_commit >= self.commit_interval_s:
                    last_commit = now
                    self.commit(asynchronous=True)
        finally:
            await self._shutdown()

    def _fetch(self) -> list[Any]:
        """Up to ``batch_size`` records without waiting for a batch to fill.

        librdkafka's batch consume waits its whole timeout unless the batch fills, which would
        add that timeout to every hop of a lightly loaded pipeline. So: take what is already
        fetched; if nothing is, block until one record arrives (or ``idle_wait_s``), then take
        what came with it. Under load batches form by themselves while the loop is busy.
        """
        messages = self._consume(self.batch_size, 0, [])
        if not messages:
            messages = self._consume(1, self.idle_wait_s, messages)
            if messages and self.batch_size > 1:
                messages = self._consume(self.batch_size - 1, 0, messages)
        return messages

    def _consume(self, count: int, timeout_s: float, earlier: list[Any]) -> list[Any]:
        """One ``consume`` call; returns ``earlier`` (what this fetch took before) plus its records.

        Rebalance callbacks run inside ``consume``. librdkafka drops the records of a revoked
        partition it has not handed out yet, but records taken before it served a revocation come
        back: those of earlier calls of this fetch, and those of this call when it may take several
        (a call that takes one record returns as soon as it has it, so its record came after any
        callback it served). Those are dropped: whoever owns the partition next reads them from the
        offset committed at the revocation. Records taken after the revocation are kept, even of a
        partition revoked earlier in this fetch: they come from its new assignment (this consumer
        got it back), and dropping them would let the acks of its later records pass them for good.
        """
        self._revoked_in_call, self._assigned_in_call = set(), set()
        taken = self.consumer.consume(count, timeout_s)
        gone = self._revoked_in_call
        if not gone:
            return earlier + taken

        def before_revocation(msg: Any) -> bool:
            return msg.error() is None and (msg.topic(), msg.partition()) in gone

        kept = [m for m in earlier if not before_revocation(m)]
        if count == 1:
            return kept + taken
        fresh, dropped = [], set()
        for msg in taken:
            if before_revocation(msg):
                dropped.add((msg.topic(), msg.partition()))
            else:
                fresh.append(msg)
        # revoked and assigned back within this one call: the records it took of such a partition
        # may be from before or after the revocation, so all went; read them again from the commit
        self._rewind(dropped & self._assigned_in_call)
        return kept + fresh

    def _rewind(self, partitions: set[TP]) -> None:
        """Seek partitions (assigned to this consumer) back to their committed offsets."""
        if not partitions:
            return
        try:
            committed = self.consumer.committed([TopicPartition(t, p) for t, p in sorted(partitions)], timeout=10)
            for tp in committed:
                if tp.offset < 0:  # nothing committed yet: where a new group member starts
                    tp.offset = OFFSET_BEGINNING
                self.consumer.seek(tp)
            log.info("re-reading %s from the committed offsets (revoked and assigned back within one fetch)",
                     _names(partitions))
        except KafkaException as exc:
            log.error("could not re-read %s after a rebalance: %s", _names(partitions), exc)

    async def _shutdown(self) -> None:
        began = time.monotonic()
        deadline = began + self.grace_s
        running = sum(lane.window.in_flight for lane in self.lanes)
        if running:
            log.info("stopping: finishing %d in-flight turns (up to %.0f s)", running, self.grace_s)
        if self.staged_stop and len(self.lanes) > 1:
            try:
                await self._drain_in_stage_order(deadline)
            except Exception:
                log.exception("stopping: draining in stage order failed; finishing what is in flight")
        self._pause(self.assignment - self.paused)
        for lane in self.lanes:
            await lane.stop_feeding()
        results = await asyncio.gather(*(lane.drain(max(0.0, deadline - time.monotonic())) for lane in self.lanes))
        if not all(results):
            log.warning("stopping: in-flight turns did not finish within %.0f s; they will be redone", self.grace_s)
        if self.tick is not None:
            try:
                await self.tick()
            except Exception:
                log.exception("last tick before stopping failed")
        self.commit(asynchronous=False)
        await self._in_thread(self.consumer.close)
        self._thread.shutdown(wait=False)
        log.info("consumer closed in %.2f s (%d turns were in flight)", time.monotonic() - began, running)

    async def _drain_in_stage_order(self, deadline: float) -> None:
        """Stop the first stage, finish its admitted turns, and keep consuming for the later stages
        until each has handled what the stage before it produced; then the next one (all bounded by
        the one grace period).

        Without this every stage stops at once and a turn in the LLM at SIGTERM gets its generate
        output before exit but its reply only after the restart. "What the stage before produced" is
        read as the high watermarks of the next stage's partitions once the stage before is drained:
        everything it produced is below them (records other workers produce later are left).
        """
        for upstream, downstream in zip(self.lanes, self.lanes[1:]):
            self._pause(self._partitions_of(upstream) - self.paused)
            await upstream.stop_feeding()
            drained = asyncio.ensure_future(upstream.window.drain(max(0.0, deadline - time.monotonic())))
            await self._consume_until(drained.done, deadline)  # the later stages keep going meanwhile
            if not await drained:
                return
            ends = await self._in_thread(self._unhandled_ends, downstream)
            log.info("stopping: %s drained (%.2f s); %s still to handle %d partitions of its input",
                     upstream.name, time.monotonic() - (deadline - self.grace_s), downstream.name, len(ends))

            def handled(downstream: Lane = downstream, ends: dict[TP, int] = ends) -> bool:
                return all(not downstream.owns(tp) or downstream.acked.get(tp, -1) >= end for tp, end in ends.items())

            if not await self._consume_until(handled, deadline):
                behind = {tp: (downstream.acked.get(tp), end) for tp, end in ends.items()
                          if downstream.owns(tp) and downstream.acked.get(tp, -1) < end}
                log.warning("stopping: %s did not reach the end of its input within the grace "
                            "(partition: handled up to, end): %s; %d in flight, %d in its backlog",
                            downstream.name, behind, downstream.window.in_flight, len(downstream.backlog))
                return

    async def _consume_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Keep fetching and dispatching (as ``run`` does) until ``done()`` or the deadline."""
        last_commit = time.monotonic()
        await asyncio.sleep(0)  # a drain with nothing to wait for is done without a fetch
        while not done():
            if time.monotonic() >= deadline:
                return False
            for msg in await self._in_thread(self._fetch):
                self._dispatch(msg)
            self._apply_backpressure()
            if time.monotonic() - last_commit >= self.commit_interval_s:
                last_commit = time.monotonic()
                self.commit(asynchronous=True)
        return True

    def _partitions_of(self, lane: Lane) -> set[TP]:
        return {tp for tp in self.assignment if tp[0] in lane.topics}

    def _unhandled_ends(self, lane: Lane) -> dict[TP, int]:
        """(On the consume thread) the high watermark of each of ``lane``'s partitions it has not
        handled up to yet; a partition without work since its assignment starts at its commit."""
        partitions = sorted(self._partitions_of(lane))
        if not partitions:
            return {}
        if self.end_offsets is not None:
            ends = dict(self.end_offsets(partitions))
        else:
            ends = {}
            for t, p in partitions:
                _, high = watermarks(self.consumer, TopicPartition(t, p), 5.0)
                ends[(t, p)] = high
        ends = {tp: end for tp, end in ends.items() if end > 0}  # a partition that never had a record
        fresh = [TopicPartition(t, p) for (t, p) in ends if (t, p) not in lane.acked]
        if fresh:
            for tp in self.consumer.committed(fresh, timeout=5.0):
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    del ends[(tp.topic, tp.partition)]
        return {tp: end for tp, end in ends.items() if lane.acked.get(tp, -1) < end}

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._thread, fn, *args)

    # --- records -------------------------------------------------------------------------------
    def _dispatch(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return
        lane = self._by_topic.get(msg.topic())
        if lane is None or not lane.owns((msg.topic(), msg.partition())):
            return  # a record fetched before its partition was revoked: its next owner reads it
        lane.offer(msg)

    def _apply_backpressure(self) -> None:
        for lane in self.lanes:
            if lane.stopping:
                continue  # a stopped stage's partitions stay paused
            mine = {tp for tp in self.assignment if tp[0] in lane.topics}
            if lane.full and not lane.paused:
                lane.paused = True
                self._pause(mine - self.paused)
            elif lane.paused and lane.drained_enough:
                lane.paused = False
                self._resume(mine & self.paused)

    def _pause(self, partitions: set[TP]) -> None:
        if not partitions:
            return
        try:
            self.consumer.pause([TopicPartition(t, p) for t, p in partitions])
            self.paused |= partitions
        except KafkaException as exc:  # e.g. revoked meanwhile
            log.debug("pause failed: %s", exc)

    def _resume(self, partitions: set[TP]) -> None:
        if not partitions:
            return
        try:
            self.consumer.resume([TopicPartition(t, p) for t, p in partitions])
        except KafkaException as exc:
            log.debug("resume failed: %s", exc)
        self.paused -= partitions

    # --- commits -------------------------------------------------------------------------------
    def committable(self, only: set[TP] | None = None) -> dict[TP, int]:
        offsets: dict[TP, int] = {}
        for lane in self.lanes:
            offsets.update(lane.committable())
        if only is not None:
            offsets = {tp: o for tp, o in offsets.items() if tp in only}
        return offsets

    def commit(self, offsets: dict[TP, int] | None = None, *, asynchronous: bool) -> None:
        """Commit finished work's offsets (those not committed yet).

        An asynchronous commit can still fail after this returns (the group coordinator moving while
        a broker restarts; its callback only logs), so every ``recommit_interval_s`` all finished
        offsets are sent again, changed or not: otherwise the last offsets before traffic stops stay
        uncommitted for good, and the next owner of those partitions redoes their turns.
        """
        if not self.commits:
            return
        wanted = self.committable() if offsets is None else offsets
        now = time.monotonic()
        if offsets is None and now - self._last_full_commit >= self.recommit_interval_s:
            self._last_full_commit = now
            changed = dict(wanted)
        else:
            changed = {tp: o for tp, o in wanted.items() if self._committed.get(tp) != o}
        if not changed:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in changed.items()], asynchronous=asynchronous
            )
            self._committed.update(changed)
        except KafkaException as exc:  # e.g. no group (a tail) or revoked meanwhile: re-read, markers dedup
            log.warning("offset commit failed (records will be read again): %s", exc)

    # --- rebalances (called on the consume thread, inside consume) ------------------------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self._assigned_in_call |= keys
        log.info("assigned %s", _names(keys))
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._assigned, keys)

    def _assigned(self, keys: set[TP]) -> None:
        # compared with the previous assignment, not the current one: an eager rebalance revokes
        # everything first, and getting back a partition nobody else had meanwhile is no take-over
        newly = keys - self._last_assigned
        self._last_assigned = set(keys)
        self.assignment = set(keys)
        self.paused -= keys  # a fresh assignment is not paused; back-pressure re-applies
        for lane in self.lanes:
            lane.paused = False
            lane.assigned(keys)
        if self.on_assigned is not None and newly:
            self.on_assigned(newly)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self._revoked_in_call |= keys
        if not keys or self._loop is None:
            return
        began = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(self._revoke(keys), self._loop)
        try:
            offsets, running = future.result(self.grace_s + 30)
        except Exception:
            log.exception("draining revoked partitions failed; their uncommitted turns will be redone")
            return
        if offsets:
            try:  # on this thread, before returning: before the partitions move
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
                self._loop.call_soon_threadsafe(self._committed.update, offsets)
            except KafkaException as exc:
                log.warning("commit at revocation failed (records will be read again): %s", exc)
        log.info("revoked %s with %d turns in flight; drained and committed in %.2f s",
                 _names(keys), running, time.monotonic() - began)

    async def _revoke(self, keys: set[TP]) -> tuple[dict[TP, int], int]:
        running = sum(lane.window.in_flight for lane in self.lanes)
        grace = 1.0 if self.stopping else self.grace_s  # at stop the grace was spent already
        results = await asyncio.gather(*(lane.revoke(keys, grace) for lane in self.lanes))
        offsets: dict[TP, int] = {}
        for part in results:
            offsets.update(part)
        self.assignment -= keys
        self.paused -= keys
        return offsets, running


def _names(keys: set[TP]) -> str:
    """``topic[0,1,2] other[3]``: compact, and what tests and operators grep for."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(keys):
        by_topic.setdefault(topic, []).append(partition)
    return " ".join(f"{t}[{','.join(map(str, ps))}]" for t, ps in by_topic.items()) or "nothing"


async def run_until(runtime: ConsumerRuntime, stop: asyncio.Event, *, subscribe: bool = True) -> None:
    """Run ``runtime`` until ``stop`` is set (the edges' entry points and tests use an event)."""
    waiter = asyncio.ensure_future(stop.wait())
    waiter.add_done_callback(lambda _: runtime.request_stop())
    try:
        await runtime.run(subscribe=subscribe)
    finally:
        waiter.cancel()
