"""Reply-marker recovery is shared by the stages of a worker: one read at start, one per rebalance."""

from __future__ import annotations

import asyncio

from streams.config import Settings
from streams.stages import replies


async def test_start_and_rebalance_reads_are_shared(monkeypatch) -> None:
    reads: list[int] = []
    gate = asyncio.Event()

    async def fake_recover(settings, codec, sessions, per_partition=5000):
        reads.append(len(reads))
        await gate.wait()
        return 0

    monkeypatch.setattr(replies, "recover_markers", fake_recover)
    recovery = replies.MarkerRecovery(Settings(), codec=None, sessions=None)  # type: ignore[arg-type]

    gate.set()
    await asyncio.gather(recovery.ensure_recovered(), recovery.ensure_recovered())
    assert reads == [0], "enrich and validate share the start-up read"

    gate.clear()
    recovery.recover_in_background()
    recovery.recover_in_background()  # the other stage, same rebalance: not started yet, so shared
    await asyncio.sleep(0)
    assert len(reads) == 2
    ready = asyncio.create_task(recovery.ready())
    await asyncio.sleep(0.01)
    assert not ready.done(), "turns wait while the read runs"
    recovery.recover_in_background()  # a request during a read restarts it
    await asyncio.sleep(0)
    assert len(reads) == 3
    gate.set()
    await asyncio.wait_for(ready, 1)


def test_one_recovery_per_outbound_topic_and_redis() -> None:
    base = Settings()
    a = replies.shared_recovery(base, None, None)  # type: ignore[arg-type]
    assert replies.shared_recovery(base, None, None) is a  # type: ignore[arg-type]
    assert replies.shared_recovery(base.derive(topic_prefix="other."), None, None) is not a  # type: ignore[arg-type]
