"""TurnDeltas without Kafka: redacted, ordered, first piece at once, later ones gathered, all awaited."""

from __future__ import annotations

import asyncio

from processors.records import ChatDelta, ChatRequest
from streams.codec import SingleObjectCodec
from streams.deltas import TurnDeltas

codec = SingleObjectCodec()


class Producer:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, str, list]] = []
        self.fail = fail

    async def send(self, topic, value, *, key=None, headers=None):
        self.sent.append((topic, value, key, list(headers or [])))
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("broker gone")
        return (0, len(self.sent))


def turn_deltas(producer, interval_s=0.05) -> TurnDeltas:
    req = ChatRequest("m-1", "web:acme:s1", "u", "web", "q", 0, {"k": "v"}, tenant="acme")
    return TurnDeltas(producer=producer, codec=codec, topic="p.chat.deltas", request=req, allowed=[],
                      interval_s=interval_s)


async def test_pieces_are_redacted_ordered_gathered_and_awaited() -> None:
    producer = Producer()
    deltas = turn_deltas(producer)
    for piece in ["Your", " card", " 4111", " 1111", " 1111", " 1111", " is", " on", " file."]:
        deltas.on_delta(piece)
        await asyncio.sleep(0.01)
    assert await deltas.finish() == 0
    records = [codec.decode(value, ChatDelta) for _, value, _, _ in producer.sent]
    assert [r.seq for r in records] == list(range(len(records)))
    assert records[0].text == "Your "  # the first safe text goes out at once
    assert len(records) < 9  # later text was gathered, not one record per token
    assert records[-1].final and not any(r.final for r in records[:-1])
    assert "".join(r.text for r in records) == "Your card [card redacted] is on file."
    assert all(key == "web:acme:s1" and topic == "p.chat.deltas" for topic, _, key, _ in producer.sent)
    assert records[0].metadata == {"k": "v"} and records[0].tenant == "acme"
    assert deltas.first_shown_ms is not None


async def test_lost_pieces_are_counted_not_silent() -> None:
    deltas = turn_deltas(Producer(fail=True), interval_s=0)
    deltas.on_delta("Hello there ")
    deltas.on_delta("friend")
    assert await deltas.finish() == 3  # "Hello ", "there " and the final "friend"


async def test_nothing_is_published_when_nothing_streamed() -> None:
    producer = Producer()
    assert await turn_deltas(producer).finish() == 0
    assert producer.sent == []


async def test_each_generation_streams_under_an_attempt_of_its_own() -> None:
    """A turn generated again after its worker died starts at seq 0 again: its pieces carry another
    attempt, so readers replace the first attempt's text instead of mixing the two."""
    first, again = Producer(), Producer()
    for producer in (first, again):
        deltas = turn_deltas(producer, interval_s=0)
        deltas.on_delta("Hello there ")
        deltas.on_delta("friend")
        await deltas.finish()
    attempts = [{codec.decode(value, ChatDelta).attempt for _, value, _, _ in p.sent} for p in (first, again)]
    assert all(len(a) == 1 and "" not in a for a in attempts)
    assert attempts[0] != attempts[1]
