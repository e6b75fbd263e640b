"""Coalescer: same-iteration calls share a batch, errors reach every caller, no added delay."""

from __future__ import annotations

import asyncio

import pytest

from processors.coalesce import Coalescer


class Recorder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0)
        if self.fail:
            raise self.fail
        return [i * 10 for i in items]


async def test_concurrent_calls_share_one_batch_in_order():
    rec = Recorder()
    co = Coalescer(rec)
    results = await asyncio.gather(*(co.submit(i) for i in range(5)))
    assert [r for r, _ in results] == [0, 10, 20, 30, 40]
    assert [n for _, n in results] == [5] * 5
    assert rec.batches == [[0, 1, 2, 3, 4]]


async def test_batches_are_bounded():
    rec = Recorder()
    co = Coalescer(rec, max_batch=2)
    await asyncio.gather(*(co.submit(i) for i in range(5)))
    assert rec.batches == [[0, 1], [2, 3], [4]]


async def test_sequential_calls_are_not_delayed_or_merged():
    rec = Recorder()
    co = Coalescer(rec)
    assert (await co.submit(1))[0] == 10
    assert (await co.submit(2))[0] == 20
    assert rec.batches == [[1], [2]]


async def test_a_failed_batch_fails_each_caller():
    co = Coalescer(Recorder(fail=ConnectionError("down")))
    results = await asyncio.gather(*(co.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_wrong_result_count_is_an_error():
    async def bad(items):
        return [1]

    co = Coalescer(bad)
    with pytest.raises(RuntimeError, match="1 results for 2 items"):
        await asyncio.gather(co.submit(1), co.submit(2))


async def test_a_cancelled_caller_does_not_break_the_others():
    rec = Recorder()
    co = Coalescer(rec)
    first = asyncio.ensure_future(co.submit(1))
    second = asyncio.ensure_future(co.submit(2))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second)[0] == 20
    with pytest.raises(asyncio.CancelledError):
        await first
