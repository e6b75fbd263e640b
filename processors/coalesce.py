"""Merge concurrent single-item calls into one batch call, with no added delay.

Why: a stage keeps up to 64 turns in flight, and each makes small Redis calls. One round trip per
call caps the stage at a few thousand calls per second of Python client overhead; one pipeline for
every call made in the same event-loop iteration costs about the same as a single call. Unlike a
timer-based batcher, nothing waits: the batch is sent on the very next loop iteration, so a lone
call is as fast as before, and many turns waking up together (one Kafka batch, one pipeline reply)
share a round trip.

The batch runs in a fresh, empty context so that no caller's trace owns it; callers wrap their own
wait in a span (see ``processors.session``).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await submit(item)`` runs ``run_batch`` over every item submitted in the same loop iteration.

    ``run_batch`` gets the items in submission order and must return one result per item. If it
    raises, every caller of that batch gets the exception (each may retry on its own).
    """

    def __init__(self, run_batch: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 256) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[tuple[R, int]]]] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> tuple[R, int]:
        """The item's result and the size of the batch it went in."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests run one each): start clean
            self._loop, self._pending, self._scheduled = loop, [], False
        future: asyncio.Future[tuple[R, int]] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, context=contextvars.Context())
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(pending), self.max_batch):
            task = loop.create_task(self._run(pending[start : start + self.max_batch]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[tuple[R, int]]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._run_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch returned {len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every caller of this batch gets it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result((result, len(batch)))
