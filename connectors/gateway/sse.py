"""Replies to web sessions as server-sent events: ``delta`` events while an answer is written, then
the authoritative ``reply``.

Every gateway instance tails all of ``chat.outbound`` and ``chat.deltas`` (assigned partitions, no
consumer group to share, starting a few seconds back), so whichever instance holds a browser's SSE
connection sees that browser's replies; no offsets are committed because nothing here needs to
survive a restart (a short per-session buffer covers a page that reconnects, with ``Last-Event-ID``).

Event ids: ``{message_id}:{attempt}.{seq}`` for a delta, ``{message_id}`` for a reply. A ``delta``
carries the new text only (concatenate in seq order); a delta of another ``attempt`` with seq 0 (the
turn generated again after its worker died) replaces the text shown so far (``ChatDelta.step``). The
``reply`` replaces whatever the deltas showed (its text may be redacted, BLOCKED or ESCALATED wording,
and it has the citations). Once a reply is in, or another attempt starts, the superseded deltas are
dropped from the buffer and later copies are ignored, so a reconnect resumes after the last event the
page saw, without text twice and without two attempts' text mixed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import defaultdict, deque
from typing import Any, AsyncIterator

from processors.records import ChatDelta, ChatResponse
from streams.codec import Codec, DecodeError

log = logging.getLogger("chatstream.gateway.sse")


def reply_event(resp: ChatResponse) -> dict[str, Any]:
    """What the browser gets: the answer and its citations, never the channel metadata."""
    return {
        "message_id": resp.message_id,
        "session_id": resp.session_id,
        "text": resp.text,
        "status": resp.status.value,
        "reason": resp.reason,
        "citations": [
            {"doc_id": c.doc_id, "title": c.title, "source": c.source, "score": c.score} for c in resp.citations
        ],
        "created_at": resp.created_at,
    }


def delta_event(delta: ChatDelta) -> dict[str, Any]:
    return {
        "message_id": delta.message_id,
        "session_id": delta.session_id,
        "attempt": delta.attempt,
        "seq": delta.seq,
        "text": delta.text,
        "final": delta.final,
    }


def event_id(event: dict[str, Any]) -> str:
    if "seq" not in event:
        return event["message_id"]
    attempt = event.get("attempt")
    return f"{event['message_id']}:{attempt}.{event['seq']}" if attempt else f"{event['message_id']}:{event['seq']}"


def format_sse(event: dict[str, Any]) -> bytes:
    kind = "delta" if "seq" in event else "reply"
    data = json.dumps(event, separators=(",", ":"))
    return f"id: {event_id(event)}\nevent: {kind}\ndata: {data}\n\n".encode()


class Hub:
    """Fan-out of replies to the SSE subscribers of a session, with a short replay buffer."""

    # room for the pieces of the answer being written next to ``buffer`` replies
    DELTAS_PER_REPLY = 400
    MAX_TRACKED = 100_000

    def __init__(self, buffer: int = 20, buffer_ttl_s: float = 300.0, queue_size: int = 1000) -> None:
        self._subs: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self._recent: dict[str, deque[tuple[float, dict[str, Any]]]] = {}
        # message_id -> (attempt, highest delta seq) shown, None once replied
        self._shown: dict[str, tuple[str, int] | None] = {}
        self.buffer = buffer
        self.buffer_ttl_s = buffer_ttl_s
        self.queue_size = queue_size
        self.delivered = 0

    def publish(self, resp: ChatResponse) -> None:
        if self._replied(resp.message_id) and any(
            e["message_id"] == resp.message_id and "seq" not in e for _, e in self._recent.get(resp.session_id, ())
        ):
            return  # the tail re-read a reply it already fanned out
        self._shown[resp.message_id] = None
        self._drop_deltas(resp.session_id, resp.message_id)  # the reply supersedes the provisional pieces
        self._fan_out(resp.session_id, reply_event(resp))

    def publish_delta(self, delta: ChatDelta) -> None:
        if self._replied(delta.message_id):
            return
        attempt, seq = self._shown.get(delta.message_id) or (None, -1)
        step = delta.step(attempt, seq)
        if step == "drop":
            return  # a repeat (the tail starts a few seconds back), or a piece of a superseded attempt
        if step == "restart":
            self._drop_deltas(delta.session_id, delta.message_id)
        self._shown[delta.message_id] = (delta.attempt, delta.seq)
        self._fan_out(delta.session_id, delta_event(delta))

    def _replied(self, message_id: str) -> bool:
        return message_id in self._shown and self._shown[message_id] is None

    def _drop_deltas(self, session_id: str, message_id: str) -> None:
        """Forget a message's buffered pieces: a reconnecting page must not get superseded text."""
        recent = self._recent.get(session_id)
        if recent is not None:
            kept = [(t, e) for t, e in recent if not ("seq" in e and e["message_id"] == message_id)]
            if len(kept) != len(recent):
                recent.clear()
                recent.extend(kept)

    def _fan_out(self, session_id: str, event: dict[str, Any]) -> None:
        now = time.monotonic()
        recent = self._recent.setdefault(session_id, deque(maxlen=self.buffer * self.DELTAS_PER_REPLY))
        recent.append((now, event))
        self._prune(now)
        for queue in list(self._subs.get(session_id, ())):
            try:
                queue.put_nowait(event)
                self.delivered += 1
            except asyncio.QueueFull:
                log.warning("SSE subscriber of %s too slow; event %s dropped for it", session_id, event_id(event))

    def _prune(self, now: float) -> None:
        cutoff = now - self.buffer_ttl_s
        for sid in [s for s, d in self._recent.items() if not d or d[-1][0] < cutoff]:
            for _, e in self._recent[sid]:
                self._shown.pop(e["message_id"], None)
            del self._recent[sid]
        if len(self._shown) > self.MAX_TRACKED:  # forget ids no buffer mentions any more (rare, O(buffer))
            live = {e["message_id"] for d in self._recent.values() for _, e in d}
            self._shown = {m: v for m, v in self._shown.items() if m in live}

    def backlog(self, session_id: str, last_event_id: str | None) -> list[dict[str, Any]]:
        """Buffered events after ``last_event_id`` (all buffered ones when unknown or absent).

        A delta id whose message was answered meanwhile resumes at that reply (its deltas are gone
        from the buffer, and the reply replaces them anyway).
        """
        events = [e for t, e in self._recent.get(session_id, ()) if t >= time.monotonic() - self.buffer_ttl_s]
        if last_event_id:
            ids = [event_id(e) for e in events]
            if last_event_id in ids:
                return events[ids.index(last_event_id) + 1 :]
            message_id = last_event_id.rsplit(":", 1)[0]
            if message_id in ids:
                return events[ids.index(message_id) :]
        return events

    async def subscribe(
        self, session_id: str, last_event_id: str | None = None, keepalive_s: float = 15.0
    ) -> AsyncIterator[bytes]:
        queue: asyncio.Queue = asyncio.Queue(self.queue_size)
        self._subs[session_id].add(queue)
        # the backlog as of the subscription, taken with it (no await between): an event published
        # while the first bytes are sent is then in the queue only, not sent twice
        backlog = self.backlog(session_id, last_event_id)
        try:
            yield b"retry: 2000\n\n"
            for event in backlog:
                yield format_sse(event)
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), keepalive_s)
                except asyncio.TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                yield format_sse(event)
        finally:
            subs = self._subs.get(session_id)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    del self._subs[session_id]

    def subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())


class OutboundTail:
    """Background reader of chat.outbound and chat.deltas feeding a ``Hub`` for web sessions.

    A group-less tail on the consumer runtime (``streams.runtime``): every partition of both topics
    assigned from ``gateway_sse_lookback_s`` ago, records of one partition in order, nothing committed.
    """

    def __init__(self, settings: Any, codec: Codec, hub: Hub, channels: tuple[str, ...] = ("web",)) -> None:
        self.settings = settings
        self.codec = codec
        self.hub = hub
        self.channels = channels
        self.ready = threading.Event()
        self._finished = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start on ``loop`` (the gateway's); call from that loop."""
        self._loop = loop
        self._stop = asyncio.Event()
        self._task = loop.create_task(self._run(), name="gateway-sse-tail")

    async def wait_ready(self, timeout_s: float = 30.0) -> bool:
        return await asyncio.to_thread(self.ready.wait, timeout_s)

    def _start_offsets(self, consumer: Any) -> list[Any]:
        """Every partition of chat.outbound and chat.deltas from a few seconds ago (no group join needed).

        Starting slightly in the past instead of at the end means the tail is positioned the moment
        ``ready`` is set, and replies produced just before (or during a gateway restart) still reach
        their browser; the page drops repeats by message_id.
        """
        from confluent_kafka import TopicPartition

        from streams.runtime.clients import watermarks

        since_ms = int((time.time() - self.settings.gateway_sse_lookback_s) * 1000)
        wanted = []
        for topic in (self.settings.topics.outbound, self.settings.topics.deltas):
            metadata = consumer.list_topics(topic, timeout=10)
            info = metadata.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                raise RuntimeError(f"topic {topic} not available: {info.error if info else 'missing'}")
            wanted += [TopicPartition(topic, p, since_ms) for p in sorted(info.partitions)]
        start = consumer.offsets_for_times(wanted, timeout=10)
        for tp in start:
            if tp.offset < 0:  # nothing that recent: start at the end
                tp.offset = watermarks(consumer, TopicPartition(tp.topic, tp.partition), 10)[1]
        return start

    async def publish(self, msg: Any) -> None:
        """One record of either topic: a reply (chat.outbound) or a provisional piece (chat.deltas)."""
        is_delta = msg.topic() == self.settings.topics.deltas
        try:
            record = self.codec.decode(msg.value(), ChatDelta if is_delta else ChatResponse)
        except DecodeError as exc:  # the pipeline dead-letters bad records; a browser tail only skips them
            log.warning("SSE tail skipped an undecodable record at %s/%d/%d: %s",
                        msg.topic(), msg.partition(), msg.offset(), exc)
            return
        if record.channel in self.channels:
            (self.hub.publish_delta if is_delta else self.hub.publish)(record)

    async def _run(self) -> None:
        from confluent_kafka import KafkaException

        from streams.runtime.clients import make_tail_consumer
        from streams.runtime.consumer import ConsumerRuntime, run_until
        from streams.runtime.lane import Lane, by_partition

        assert self._stop is not None
        consumer = make_tail_consumer(self.settings, f"{self.settings.consumer_group}-gateway-sse")
        lane = Lane("gateway.sse", [self.settings.topics.outbound, self.settings.topics.deltas], self.publish,
                    max_in_flight=self.settings.max_in_flight, max_backlog=self.settings.stream_buffer_maxsize,
                    chain_key=by_partition)
        runtime = ConsumerRuntime(consumer, [lane], grace_s=1.0, commits=False)
        try:
            while not self._stop.is_set():
                try:
                    start = await asyncio.to_thread(self._start_offsets, consumer)
                    break
                except (KafkaException, RuntimeError) as exc:
                    log.warning("SSE tail cannot start yet (%s); retrying", exc)
                    try:
                        await asyncio.wait_for(self._stop.wait(), 2)
                    except asyncio.TimeoutError:
                        pass
            else:
                await asyncio.to_thread(consumer.close)
                return
            runtime.assign(start)
            log.info("SSE tail reading %d partitions of %s and %s", len(start), self.settings.topics.outbound,
                     self.settings.topics.deltas)
            self.ready.set()
            await run_until(runtime, self._stop, subscribe=False)
        finally:
            self._finished.set()

    def stop(self) -> None:
        """Stop the tail (from any thread) and wait up to 5 s for it to close."""
        if self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._finished.wait(5)
