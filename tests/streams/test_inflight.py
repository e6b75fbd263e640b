"""The in-flight window: bounded, ordered per session, acks in offset order."""

from __future__ import annotations

import asyncio
import random

from streams.inflight import InFlightWindow


async def _noop() -> None:
    return None


async def test_session_order_is_kept_while_sessions_run_in_parallel() -> None:
    acked: list[int] = []
    finished: dict[str, list[int]] = {}
    window = InFlightWindow(16, on_release=acked.append)
    running = 0
    peak = 0

    async def work(session: str, n: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(random.uniform(0, 0.02))
        finished.setdefault(session, []).append(n)
        running -= 1

    offset = 0
    for n in range(10):
        for s in range(8):
            await window.submit(0, offset, f"s{s}", lambda s=s, n=n: work(f"s{s}", n), offset)
            offset += 1
    assert await window.drain(5)
    assert all(order == list(range(10)) for order in finished.values())
    assert acked == list(range(80)), "acks must be released in offset order"
    assert 1 < peak <= 8, "sessions run in parallel, one turn at a time each"


async def test_acks_wait_for_an_earlier_slow_offset() -> None:
    acked: list[int] = []
    window = InFlightWindow(8, on_release=acked.append)
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    async def fast() -> None:
        return None

    await window.submit(0, 0, "a", slow, 0)
    for off in range(1, 5):
        await window.submit(0, off, f"b{off}", fast, off)
    await asyncio.sleep(0.05)
    assert acked == [], "nothing may be acked while offset 0 is still running"
    gate.set()
    assert await window.drain(1)
    assert acked == [0, 1, 2, 3, 4]


async def test_partitions_ack_independently() -> None:
    acked: list[tuple[int, int]] = []
    window = InFlightWindow(8, on_release=acked.append)
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    await window.submit(0, 0, "a", slow, (0, 0))
    await window.submit(1, 0, "b", _noop, (1, 0))
    await asyncio.sleep(0.05)
    assert acked == [(1, 0)]
    gate.set()
    await window.drain(1)
    assert acked == [(1, 0), (0, 0)]


async def test_submit_blocks_when_full() -> None:
    window = InFlightWindow(2, on_release=lambda t: None, max_unacked=2)
    gate = asyncio.Event()
    await window.submit(0, 0, "a", gate.wait, 0)
    await window.submit(0, 1, "b", gate.wait, 1)
    third = asyncio.create_task(window.submit(0, 2, "c", gate.wait, 2))
    await asyncio.sleep(0.05)
    assert not third.done(), "a full window must stop the caller from pulling more"
    gate.set()
    await asyncio.wait_for(third, 1)
    assert await window.drain(1)


async def test_failed_work_is_never_acked() -> None:
    acked: list[int] = []
    window = InFlightWindow(4, on_release=acked.append)

    async def boom() -> None:
        raise RuntimeError("handler bug")

    ran: list[int] = []

    async def later() -> None:
        ran.append(1)

    await window.submit(0, 0, "a", boom, 0)
    await window.submit(0, 1, "b", later, 1)
    assert await window.drain(1), "both finished (one failed) within the timeout"
    assert ran == [1], "work after the failed one still ran"
    assert acked == [], "an offset whose work failed blocks the partition's acks (it will be redelivered)"


async def test_work_read_before_a_rebalance_is_not_started_nor_acked() -> None:
    acked: list[int] = []
    ran: list[int] = []
    window = InFlightWindow(1, on_release=acked.append)
    gate = asyncio.Event()
    epoch = [0]

    async def slow() -> None:
        await gate.wait()
        ran.append(0)

    async def quick() -> None:
        ran.append(1)

    await window.submit(0, 0, "a", slow, 0)
    read_in = epoch[0]
    await window.submit(0, 1, "b", quick, 1, still_wanted=lambda: epoch[0] == read_in)
    await asyncio.sleep(0.01)
    epoch[0] += 1  # a rebalance began while the event waited for a running slot
    gate.set()
    assert await window.drain(1)
    assert ran == [0] and acked == [0], "offset 1 was read before the rebalance: neither run nor acked"
    window.forget_partitions({0})  # the partition moved; its next owner reads offset 1 again
    assert await window.submit(0, 2, "b", quick, 2, still_wanted=lambda: True) is True
    assert await window.drain(1)
    assert acked == [0, 2]


async def test_drain_partitions_waits_only_for_those_partitions() -> None:
    window = InFlightWindow(8, on_release=lambda token: None)
    gate_a, gate_b = asyncio.Event(), asyncio.Event()
    await window.submit("p0", 0, "a", gate_a.wait, 0)
    await window.submit("p1", 0, "b", gate_b.wait, 0)
    assert await window.drain_partitions({"p0"}, timeout_s=0.05) is False
    gate_a.set()
    assert await window.drain_partitions({"p0"}, timeout_s=1) is True
    assert window.in_flight == 1, "p1's work is left alone"
    gate_b.set()
    assert await window.drain(1)


async def test_a_turn_waiting_for_its_session_holds_no_running_slot() -> None:
    window = InFlightWindow(2, on_release=lambda t: None, max_unacked=16)
    gate = asyncio.Event()
    other_ran = asyncio.Event()

    async def other() -> None:
        other_ran.set()

    await window.submit(0, 0, "busy", gate.wait, 0)
    for off in (1, 2, 3):  # queued behind offset 0 of the same session
        await window.submit(0, off, "busy", gate.wait, off)
    await window.submit(1, 0, "free", other, (1, 0))
    await asyncio.wait_for(other_ran.wait(), 1)  # would hang if waiting turns held the two slots
    assert window.running_count == 1, "only the session's head holds a slot; its three queued turns hold none"
    gate.set()
    assert await window.drain(1)
