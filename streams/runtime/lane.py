"""One handler's share of a consumer: a backlog, an in-flight window, and the offsets it finished.

A worker's one consumer feeds several lanes (one per stage it runs; deliver and the sinks have one
each). The consume thread hands records to ``offer`` without ever blocking; a feeder task moves them
from the backlog into the lane's ``InFlightWindow`` (many turns at once, one at a time per chain key,
per-partition release strictly in offset order). When the backlog is full the runtime pauses only
this lane's partitions, so a busy stage never stalls the others. ``acked`` holds, per partition, the
next offset after work that is finished together with everything before it: that is what may be
committed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from functools import partial
from typing import Any, Awaitable, Callable, Hashable

from streams.inflight import InFlightWindow

log = logging.getLogger(__name__)

TP = tuple[str, int]
Handle = Callable[[Any], Awaitable[Any]]


def by_session(msg: Any) -> Hashable:
    """Chain key of the pipeline stages: one turn at a time per session (the record key)."""
    return (msg.topic(), msg.key())


def by_partition(msg: Any) -> Hashable:
    """Chain key of the edges: records of one partition one after the other, partitions concurrently."""
    return (msg.topic(), msg.partition())


def default_backlog(max_in_flight: int) -> int:
    """The backlog a lane holds when ``settings.stream_buffer_maxsize`` is 0: enough fetched records
    to refill the in-flight window twice, and at least one consume batch (500)."""
    return max(500, max_in_flight * 2)


class Lane:
    def __init__(
        self,
        name: str,
        topics: list[str],
        handle: Handle,
        *,
        max_in_flight: int,
        chain_key: Callable[[Any], Hashable] = by_session,
        max_backlog: int | None = None,
        committable: Callable[[], dict[TP, int]] | None = None,
        on_revoked: Callable[[set[TP]], Any] | None = None,
    ) -> None:
        self.name = name
        self.topics = list(topics)
        self.handle = handle
        self.chain_key = chain_key
        self.max_backlog = max_backlog or default_backlog(max_in_flight)
        self.window = InFlightWindow(max_in_flight, on_release=self._released)
        self.acked: dict[TP, int] = {}
        self._committable = committable
        self._on_revoked = on_revoked
        self.backlog: collections.deque[Any] = collections.deque()
        self.paused = False
        self._has_work = asyncio.Event()
        self._feeder: asyncio.Task | None = None
        # partition -> generation; a record offered under another generation is stale (revoked since)
        self._owned: dict[TP, int] = {}
        self._generation = 0
        self._closing: set[TP] = set()  # being revoked: admitted work finishes, nothing new is admitted
        self.stopping = False

    # --- ownership ---------------------------------------------------------------------------
    def assigned(self, partitions: set[TP]) -> None:
        for tp in partitions:
            if tp[0] in self.topics:
                self._generation += 1
                self._owned[tp] = self._generation

    def owns(self, tp: TP) -> bool:
        return tp in self._owned

    def mine(self, partitions: set[TP]) -> set[TP]:
        return {tp for tp in partitions if tp[0] in self.topics}

    async def revoke(self, partitions: set[TP], grace_s: float) -> dict[TP, int]:
        """Admit nothing more of the revoked partitions, let their admitted turns finish (bounded by
        ``grace_s``), and return the offsets to commit before they move; then forget them.

        Admitted turns finish rather than being skipped: a skipped turn would hold the commit back
        and make every finished turn behind it in the partition run again on the next owner.
        Records still in the backlog were never started; the next owner reads them.
        """
        mine = self.mine(partitions)
        if not mine:
            return {}
        self._closing |= mine
        self.backlog = collections.deque(m for m in self.backlog if (m.topic(), m.partition()) not in mine)
        finished = await self.window.drain_partitions(mine, grace_s)
        if not finished:
            log.warning("%s: turns of revoked partitions did not finish within %.0f s", self.name, grace_s)
        offsets = {tp: o for tp, o in self.committable().items() if tp in mine}
        for tp in mine:
            self._owned.pop(tp, None)  # what is still waiting (past the grace) will not start
            self.acked.pop(tp, None)
        self._closing -= mine
        self.window.forget_partitions(mine)
        if self._on_revoked is not None:
            self._on_revoked(mine)
        return offsets

    # --- records -----------------------------------------------------------------------------
    def offer(self, msg: Any) -> None:
        self.backlog.append(msg)
        self._has_work.set()

    @property
    def full(self) -> bool:
        return len(self.backlog) >= self.max_backlog

    @property
    def drained_enough(self) -> bool:
        return len(self.backlog) <= self.max_backlog // 2

    def start(self) -> None:
        self._feeder = asyncio.create_task(self._feed(), name=f"lane-{self.name}")

    async def _feed(self) -> None:
        while True:
            if not self.backlog:
                self._has_work.clear()
                await self._has_work.wait()
                continue
            msg = self.backlog.popleft()
            tp = (msg.topic(), msg.partition())
            generation = self._owned.get(tp)
            if generation is None or self.stopping:
                continue
            await self.window.submit(
                partition=tp,
                offset=msg.offset(),
                chain_key=self.chain_key(msg),
                work=partial(self.handle, msg),
                token=(tp, msg.offset()),
                still_wanted=partial(self._still_owned, tp, generation),
                admit=partial(self._admits, tp, generation),
            )

    def _still_owned(self, tp: TP, generation: int) -> bool:
        return self._owned.get(tp) == generation

    def _admits(self, tp: TP, generation: int) -> bool:
        return not self.stopping and tp not in self._closing and self._owned.get(tp) == generation

    def _released(self, token: tuple[TP, int]) -> None:
        tp, offset = token
        if tp in self._owned:
            self.acked[tp] = offset + 1

    def committable(self) -> dict[TP, int]:
        """Next offsets that may be committed: finished work (or the lane's own policy)."""
        if self._committable is None:
            return dict(self.acked)
        # the lane's own policy (e.g. a sink holding open sessions), never past unfinished work
        policy = self._committable()
        return {tp: min(o, policy[tp]) for tp, o in self.acked.items() if tp in policy}

    # --- stop --------------------------------------------------------------------------------
    async def stop_feeding(self) -> None:
        """Nothing more is admitted; what was admitted may finish (``drain``)."""
        self.stopping = True
        self.backlog.clear()
        if self._feeder is not None:
            self._feeder.cancel()
            await asyncio.gather(self._feeder, return_exceptions=True)
            self._feeder = None

    async def drain(self, grace_s: float) -> bool:
        finished = await self.window.drain(grace_s)
        if not finished:
            await self.window.cancel()
        return finished
