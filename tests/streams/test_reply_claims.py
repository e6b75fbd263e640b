"""A turn stuck on its way out while its partition moved on is answered once, not twice.

Two validate stages stand for two workers: A (the old owner of the partition) and B (the new one).
They share the real Redis and produce to a real topic through the real stage runner. A's produce is
held, as it is when a turn outlives ``shutdown_grace_s`` in a revoked partition; meanwhile B
reprocesses the same record from the last commit. Before reply claims, B found no marker, replied,
and A's held reply followed: two replies. Now B waits on A's claim and drops the turn once A marks.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from processors.records import ChatRequest, ChatResponse, ChatTurn
from streams.codec import make_codec
from streams.config import Settings
from streams.message import InboundMessage
from streams.producer import AsyncProducer
from streams.stage import StageRunner
from streams.stages import clients
from streams.stages.validate import ValidateStage
from streams.topic_reader import read_topic
from streams.topics import create_topics

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


class HeldProducer:
    """The real producer, except that sends wait until ``release`` is set (a stuck turn's produce)."""

    def __init__(self, real: AsyncProducer) -> None:
        self.real = real
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, topic, value, *, key=None, headers=None, partition=None):  # type: ignore[no-untyped-def]
        self.entered.set()
        await self.release.wait()
        return await self.real.send(topic, value, key=key, headers=headers, partition=partition)


def _turn(message_id: str) -> ChatTurn:
    request = ChatRequest(
        message_id=message_id, session_id=f"s-{message_id}", user_id="u-1", channel="web",
        text="How long do refunds take?", sent_at=1_700_000_000_000,
    )
    return ChatTurn(request=request, answer="Refunds take 30 days [refunds].", llm_latency_ms=5)


@pytest.fixture
def claim_settings(settings: Settings) -> Settings:
    run = uuid.uuid4().hex[:8]
    derived = settings.derive(topic_prefix=f"claims-{run}.", consumer_group=f"claims-{run}", otlp_endpoint="")
    create_topics(derived)
    wait_readable(derived)
    return derived


def wait_readable(settings: Settings) -> None:
    """New topics answer NOT_LEADER until their leaders are elected; the stages read outbound at start."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + 30
    while True:
        try:
            list(read_topic(settings, settings.topics.outbound, timeout_s=5))
            return
        except KafkaException:
            assert time.monotonic() < deadline, "outbound topic has no leaders 30 s after creation"
            time.sleep(0.2)


async def test_reprocessing_waits_for_the_stuck_owners_claim_and_drops_the_turn(claim_settings: Settings) -> None:
    s = claim_settings
    codec = make_codec(s)
    real = AsyncProducer(s.kafka_bootstrap)
    held = HeldProducer(real)
    old_owner, new_owner = ValidateStage(s), ValidateStage(s)
    await old_owner.start(codec)
    await new_owner.start(codec)
    turn = _turn(f"m-{uuid.uuid4().hex[:8]}")
    msg = InboundMessage(
        topic=s.topics.generated, partition=0, offset=0, key=turn.request.session_id.encode(),
        value=codec.encode(turn, topic=s.topics.generated),
    )
    try:
        a = asyncio.create_task(StageRunner(old_owner, s, codec, held).handle(msg))
        await asyncio.wait_for(held.entered.wait(), 30)  # A passed its checks and is stuck producing
        b = asyncio.create_task(StageRunner(new_owner, s, codec, real).handle(msg))  # the partition moved
        done, _ = await asyncio.wait([b], timeout=2.0)
        assert not done, "the new owner replied while the old owner's reply was still on its way"
        held.release.set()
        await asyncio.wait_for(asyncio.gather(a, b), 60)
    finally:
        held.release.set()
        await real.close()
        await old_owner.stop()
        await new_owner.stop()

    replies = [
        codec.decode(m.value(), ChatResponse).message_id
        for m in await asyncio.to_thread(lambda: list(read_topic(s, s.topics.outbound)))
    ]
    assert replies == [turn.request.message_id], f"{len(replies)} replies for one message"
    assert await old_owner.sessions.is_replied(turn.request.message_id)
    await clients.close_all()  # the worker's shared Redis client belongs to this test's event loop


async def test_a_claim_left_by_a_dead_owner_expires(claim_settings: Settings) -> None:
    """A worker killed between claim and produce delays that turn by ``reply_claim_ttl_s``, no more."""
    s = claim_settings.derive(reply_claim_ttl_s=1.0)
    codec = make_codec(s)
    dead, survivor = ValidateStage(s), ValidateStage(s)
    await dead.start(codec)
    await survivor.start(codec)
    turn = _turn(f"m-{uuid.uuid4().hex[:8]}")
    real = AsyncProducer(s.kafka_bootstrap)
    try:
        claim = await dead.sessions.claim_reply(turn.request.message_id, 1000)
        assert claim.state == "ok"
        msg = InboundMessage(
            topic=s.topics.generated, partition=0, offset=0, key=turn.request.session_id.encode(),
            value=codec.encode(turn, topic=s.topics.generated),
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.wait_for(StageRunner(survivor, s, codec, real).handle(msg), 30)
        waited = loop.time() - began
        # the dead owner's claim is now stale: its (never produced) reply cannot be marked as the owner
        assert not await dead.sessions.mark_claimed(claim)
    finally:
        await real.close()
        await dead.stop()
        await survivor.stop()
        await clients.close_all()
    replies = await asyncio.to_thread(lambda: list(read_topic(s, s.topics.outbound)))
    assert len(replies) == 1
    assert 0.5 <= waited < 10, f"the survivor waited {waited:.1f}s for a 1 s claim"
