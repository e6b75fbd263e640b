"""``chatstream sink transcripts --to URL``: a finished conversation, whole, to the CRM.

Reads chat.inbound (what users wrote) and chat.outbound (answers, citations, statuses), groups them
by session, and pushes a session once nothing happened in it for ``transcript_idle_s``. Both topics
are keyed by session id with the same partition count, and the range assignor gives one instance
the same partition numbers of both, so a session lives wholly in one instance.

Offsets: a record may be committed only once its session was pushed, so per partition the commit
stops at the oldest record of a session still open. A crash re-reads those records and rebuilds
the open sessions; a session pushed but not yet committed is pushed again with the same
``Idempotency-Key`` (session id + last message id). After ``sink_max_attempts`` the session's
records go to chat.deadletter as they were, so a replay rebuilds the same transcript.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import TopicPartition

from connectors.consume import Commits, dead_letter_for, send_dead_letter
from connectors.delivery.http import DeliveryError
from connectors.sinks.webhook import Webhook
from processors.records import ChatRequest, ChatResponse
from streams.codec import Codec, DecodeError
from streams.runtime.lane import Lane, by_partition

log = logging.getLogger("chatstream.sinks.transcripts")


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Turn:
    message_id: str
    question: ChatRequest | None = None
    answer: ChatResponse | None = None

    @property
    def at(self) -> int:
        return self.question.sent_at if self.question else (self.answer.created_at if self.answer else 0)


@dataclass
class Session:
    session_id: str
    turns: dict[str, Turn] = field(default_factory=dict)
    records: list[Any] = field(default_factory=list)  # the Kafka messages, for offsets and dead letters
    last_seen: float = 0.0  # wall clock seconds of the newest record's own timestamp

    def payload(self) -> dict[str, Any]:
        turns = sorted(self.turns.values(), key=lambda t: t.at)
        first = next((t.question or t.answer for t in turns if t.question or t.answer), None)
        messages: list[dict[str, Any]] = []
        for t in turns:
            if t.question is not None:
                messages.append({"role": "user", "message_id": t.message_id, "text": t.question.text,
                                 "at": _iso(t.question.sent_at)})
            if t.answer is not None:
                a = t.answer
                messages.append({
                    "role": "assistant", "message_id": t.message_id, "text": a.text, "status": a.status.value,
                    "reason": a.reason, "at": _iso(a.created_at), "latency_ms": a.latency_ms,
                    "groundedness": a.groundedness,
                    "citations": [{"doc_id": c.doc_id, "title": c.title, "source": c.source, "score": c.score}
                                  for c in a.citations],
                })
        statuses: dict[str, int] = {}
        for t in turns:
            if t.answer is not None:
                statuses[t.answer.status.value] = statuses.get(t.answer.status.value, 0) + 1
        return {
            "session_id": self.session_id,
            "channel": first.channel if first else "",
            "tenant": first.tenant if first else "",
            "user_id": first.user_id if first else "",
            "started_at": _iso(min(t.at for t in turns)) if turns else None,
            "ended_at": _iso(max(t.at for t in turns)) if turns else None,
            "turn_count": len(turns),
            "statuses": statuses,
            "messages": messages,
        }

    def idempotency_key(self) -> str:
        last = max(self.turns.values(), key=lambda t: t.at).message_id if self.turns else "empty"
        return f"transcript:{self.session_id}:{last}"


class TranscriptSink:
    def __init__(self, settings: Any, webhook: Webhook, producer: Any, codec: Codec,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.webhook = webhook
        self.producer = producer
        self.codec = codec
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.consumed: Commits = {}  # (topic, partition) -> next offset after what was read
        self.counts: dict[str, int] = {}
        self._lock = asyncio.Lock()

    def _count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n

    async def add(self, msg: Any) -> None:
        tp = (msg.topic(), msg.partition())
        self.consumed[tp] = max(self.consumed.get(tp, 0), msg.offset() + 1)
        try:
            if msg.topic() == self.settings.topics.inbound:
                record: Any = self.codec.decode(msg.value(), ChatRequest)
                stamp = record.sent_at
            else:
                record = self.codec.decode(msg.value(), ChatResponse)
                stamp = record.created_at
        except DecodeError as exc:
            # chat.inbound's owner dead-letters its bad records already; only ours to report here
            if msg.topic() != self.settings.topics.inbound:
                await send_dead_letter(self.producer, self.codec, self.settings, dead_letter_for(msg, "sink.transcripts", exc))
            self._count("undecodable")
            return
        session = self.sessions.setdefault(record.session_id, Session(record.session_id))
        turn = session.turns.setdefault(record.message_id, Turn(record.message_id))
        if isinstance(record, ChatRequest):
            turn.question = record
        else:
            turn.answer = record
        session.records.append(msg)
        session.last_seen = max(session.last_seen, stamp / 1000)

    async def handle_batch(self, messages: list[Any]) -> Commits:
        for msg in messages:
            await self.add(msg)
        return {}

    async def flush_idle(self, force: bool = False) -> Commits:
        """Push every idle session, then the offsets that are safe to commit."""
        now = self.clock()
        idle = [s for s in self.sessions.values() if force or now - s.last_seen >= self.settings.transcript_idle_s]
        for session in idle:
            await self.push(session)
            del self.sessions[session.session_id]
        return self.safe_offsets()

    async def push(self, session: Session) -> None:
        if not any(t.answer for t in session.turns.values()) and not any(t.question for t in session.turns.values()):
            return
        try:
            await self.webhook.send(session.payload(), session.idempotency_key())
            self._count("pushed")
        except DeliveryError as exc:
            for msg in session.records:
                await send_dead_letter(self.producer, self.codec, self.settings,
                                       dead_letter_for(msg, "sink.transcripts", exc, None))
            self._count("dead_lettered")

    def safe_offsets(self) -> Commits:
        oldest_open: Commits = {}
        for session in self.sessions.values():
            for msg in session.records:
                tp = (msg.topic(), msg.partition())
                oldest_open[tp] = min(oldest_open.get(tp, msg.offset()), msg.offset())
        return {tp: oldest_open.get(tp, nxt) for tp, nxt in self.consumed.items()}

    def lane(self) -> Lane:
        """chat.inbound + chat.outbound on the consumer runtime; commits stop at open sessions.

        Reading a record and pushing idle sessions never interleave (``flush_locked`` is the
        runtime's tick, under the same lock), as in a loop that does one, then the other.
        """
        return Lane("sink.transcripts", [self.settings.topics.inbound, self.settings.topics.outbound],
                    self.add_locked, max_in_flight=self.settings.max_in_flight,
                    max_backlog=self.settings.stream_buffer_maxsize, chain_key=by_partition,
                    committable=self.safe_offsets,
                    on_revoked=lambda gone: self.revoke([TopicPartition(t, p) for t, p in gone]))

    async def add_locked(self, msg: Any) -> None:
        async with self._lock:
            await self.add(msg)

    async def flush_locked(self) -> None:
        async with self._lock:
            await self.flush_idle()

    def revoke(self, partitions: list[Any]) -> None:
        """Forget what belongs to partitions another instance takes over; it re-reads them."""
        gone = {(p.topic, p.partition) for p in partitions}
        for tp in gone:
            self.consumed.pop(tp, None)
        for sid in [s.session_id for s in self.sessions.values()
                    if any((m.topic(), m.partition()) in gone for m in s.records)]:
            del self.sessions[sid]


async def run(settings: Any, url: str, stop: asyncio.Event | None = None, group: str | None = None) -> None:
    from streams.replay.namespace import refuse_replay_namespace

    refuse_replay_namespace(settings.topic_prefix, "sink transcripts")  # replays never open tickets or CRM records
    import httpx

    from connectors.consume import make_consumer, run_edge
    from streams.codec import make_codec
    from streams.runtime.clients import make_producer

    stop = stop or asyncio.Event()
    codec = make_codec(settings)
    producer = make_producer(settings)
    async with httpx.AsyncClient(timeout=settings.sink_timeout_s) as http:
        sink = TranscriptSink(settings, Webhook(settings, url, http), producer, codec)
        consumer = make_consumer(
            settings, group or f"{settings.consumer_group}-sink-transcripts", **{"partition.assignment.strategy": "range"}
        )
        try:
            await run_edge(consumer, sink.lane(), stop, grace_s=settings.shutdown_grace_s, tick=sink.flush_locked)
        finally:
            log.info("transcript sink stopping (open sessions stay uncommitted and are re-read): %s", sink.counts)
            await producer.close(10)
