"""Many turns in flight, order per session, offsets that never pass unfinished work.

An LLM call takes seconds, so a stage must run many turns at once; but a session's turns must be
handled in order, and a committed offset must never pass a turn still running (a plain "N
concurrent handlers per partition" gets that wrong: it acks out of order). This window gives all three:

* a semaphore caps running work; a turn waiting for its session's previous turn does not hold a
  slot, so a burst of one session cannot starve the others;
* work of the same chain key (session) waits for the previous one of that key;
* completions are released per partition strictly in offset order, so an ack means "this and
  everything before it in the partition is done"; a second cap bounds everything submitted and not
  yet acked (back-pressure: ``submit`` blocks on it, so the lane stops feeding, its backlog fills and
  the consumer pauses its partitions; memory stays flat, and one stuck turn cannot make the ack queue
  grow without bound).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable


@dataclass
class _Entry:
    offset: int
    token: Any
    done: bool = False


@dataclass
class WindowStats:
    submitted: int = 0
    released: int = 0
    running: int = 0
    peak_running: int = 0
    waiting_for_ack: int = 0
    chains: dict[Hashable, int] = field(default_factory=dict)


class InFlightWindow:
    def __init__(
        self,
        max_in_flight: int,
        on_release: Callable[[Any], Awaitable[None] | None],
        max_unacked: int | None = None,
    ) -> None:
        self._running = asyncio.Semaphore(max_in_flight)
        self._unacked = asyncio.Semaphore(max_unacked or max_in_flight * 4)
        self._on_release = on_release
        self._pending: dict[Hashable, collections.deque[_Entry]] = collections.defaultdict(collections.deque)
        self._tails: dict[Hashable, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self._task_partition: dict[asyncio.Task, Hashable] = {}
        self._running_now = 0
        self.stats = WindowStats()

    @property
    def in_flight(self) -> int:
        """Admitted and not finished (running, or waiting for a slot or for its session)."""
        return len(self._tasks)

    @property
    def running_count(self) -> int:
        return self._running_now

    async def submit(
        self,
        partition: Hashable,
        offset: int,
        chain_key: Hashable,
        work: Callable[[], Awaitable[None]],
        token: Any,
        still_wanted: Callable[[], bool] | None = None,
        admit: Callable[[], bool] | None = None,
    ) -> bool:
        """Schedule ``work``; blocks only while the window holds too many unacked entries.

        ``still_wanted`` is asked when the work could start (its session's previous turn done and a
        running slot free): an event read before a rebalance or a shutdown began must not start (it
        is neither run nor acked; whoever owns its partition next reads it again from the committed
        offset, and ``forget_partitions`` drops its bookkeeping). ``admit`` (default: ``still_wanted``)
        is asked once the window has room, before the work is admitted at all. Returns whether it
        was scheduled.
        """
        await self._unacked.acquire()
        check = admit if admit is not None else still_wanted
        if check is not None and not check():
            self._unacked.release()
            return False
        entry = _Entry(offset, token)
        self._pending[partition].append(entry)
        previous = self._tails.get(chain_key)
        task = asyncio.create_task(self._run(partition, entry, chain_key, previous, work, still_wanted))
        self._tails[chain_key] = task
        self._tasks.add(task)
        self._task_partition[task] = partition
        self.stats.submitted += 1
        self.stats.running = len(self._tasks)
        self.stats.peak_running = max(self.stats.peak_running, self.stats.running)
        return True

    async def _run(
        self,
        partition: Hashable,
        entry: _Entry,
        chain_key: Hashable,
        previous: asyncio.Task | None,
        work: Callable[[], Awaitable[None]],
        still_wanted: Callable[[], bool] | None = None,
    ) -> None:
        task = asyncio.current_task()
        slot = False
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if previous is not None and previous.cancelled():
                raise asyncio.CancelledError()  # the chain was cut (shutdown): do not overtake it
            await self._running.acquire()
            slot = True
            self._running_now += 1
            if still_wanted is not None and not still_wanted():
                return  # not started, not acked: read again by the partition's next owner
            await work()
            entry.done = True
        finally:
            if self._tails.get(chain_key) is task:
                del self._tails[chain_key]
            self._tasks.discard(task)  # type: ignore[arg-type]
            self._task_partition.pop(task, None)  # type: ignore[arg-type]
            self.stats.running = len(self._tasks)
            if slot:
                self._running_now -= 1
                self._running.release()
            if entry.done:
                await self._release_ready(partition)

    async def _release_ready(self, partition: Hashable) -> None:
        queue = self._pending[partition]
        while queue and queue[0].done:
            entry = queue.popleft()
            self.stats.released += 1
            self._unacked.release()
            result = self._on_release(entry.token)
            if asyncio.iscoroutine(result):
                await result

    def forget_partitions(self, partitions: set[Hashable]) -> None:
        """Drop ack bookkeeping for partitions this worker no longer owns."""
        for partition in partitions:
            queue = self._pending.pop(partition, None)
            for _ in queue or ():
                self._unacked.release()

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait for running work; True when everything finished in time."""
        if not self._tasks:
            return True
        done, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        return not pending

    async def drain_partitions(self, partitions: set[Hashable], timeout_s: float | None = None) -> bool:
        """Wait for the running work of these partitions (a rebalance takes them away)."""
        tasks = {t for t, p in self._task_partition.items() if p in partitions}
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        return not pending

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
