"""``chatstream sink escalations --to URL [--preset zendesk]``: one ticket per ChatEscalation.

The ticket's idempotency key is the escalation's ``message_id`` (sent as ``Idempotency-Key`` and as
the ticket's ``external_id``), and a Redis marker ``ticketed:{message_id}`` written after the 2xx
keeps a re-read or re-produced escalation from even being posted again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Callable

from connectors.consume import (
    dead_letter_for,
    decode_or_dead_letter,
    in_partition_order,
    process_span,
    send_dead_letter,
)
from connectors.delivery.http import DeliveryError
from connectors.sinks.webhook import Webhook
from processors.backoff import is_transient_redis_error, retry_transient
from processors.records import ChatEscalation
from streams.codec import Codec
from streams.runtime.lane import Lane, by_partition
from streams.tracing import record_failure

log = logging.getLogger("chatstream.sinks.escalations")


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds")


def transcript_text(esc: ChatEscalation) -> str:
    lines = [f"Escalated from {esc.channel} conversation {esc.session_id}: {esc.reason}", ""]
    for turn in esc.transcript:
        stamp = f"[{_when(turn.at)}] " if turn.at else ""
        lines.append(f"{stamp}{turn.role}: {turn.text}")
    return "\n".join(lines)


def generic_payload(esc: ChatEscalation) -> dict[str, Any]:
    return {
        "message_id": esc.message_id,
        "session_id": esc.session_id,
        "user_id": esc.user_id,
        "channel": esc.channel,
        "tenant": esc.tenant,
        "reason": esc.reason,
        "created_at": _when(esc.created_at),
        "transcript": [{"role": t.role, "text": t.text, "message_id": t.message_id, "at": t.at} for t in esc.transcript],
        "metadata": dict(esc.metadata),
    }


def zendesk_payload(esc: ChatEscalation) -> dict[str, Any]:
    """Zendesk's ``POST /api/v2/tickets`` body."""
    first_user = next((t.text for t in esc.transcript if t.role == "user"), "")
    subject = f"[{esc.channel}] {first_user or esc.reason}"
    return {
        "ticket": {
            "subject": subject[:150],
            "comment": {"body": transcript_text(esc), "public": False},
            "requester": {"name": esc.user_id[:255]},
            "external_id": esc.message_id,
            "tags": ["chatstream", f"channel_{esc.channel}", f"tenant_{esc.tenant}"],
        }
    }


PRESETS: dict[str, Callable[[ChatEscalation], dict[str, Any]]] = {"generic": generic_payload, "zendesk": zendesk_payload}


def ticketed_key(message_id: str) -> str:
    return f"ticketed:{message_id}"


class EscalationSink:
    def __init__(self, settings: Any, webhook: Webhook, redis: Any, producer: Any, codec: Codec, preset: str = "generic"):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        self.settings = settings
        self.webhook = webhook
        self.redis = redis
        self.producer = producer
        self.codec = codec
        self.payload = PRESETS[preset]
        self.counts: dict[str, int] = {}

    async def _redis(self, fn: Any) -> Any:
        return await retry_transient(fn, is_transient=is_transient_redis_error, base_s=0.2, max_s=5, deadline_s=600)

    def _done(self, outcome: str) -> str:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        return outcome

    async def handle(self, msg: Any) -> str:
        with process_span(msg, "sink.escalations") as span:
            esc = await decode_or_dead_letter(msg, ChatEscalation, "sink.escalations", codec=self.codec,
                                              producer=self.producer, settings=self.settings, span=span)
            if esc is None:
                return self._done("dead_lettered")
            span.set_attribute("messaging.message.id", esc.message_id)
            key = ticketed_key(esc.message_id)
            if await self._redis(lambda: self.redis.exists(key)):
                return self._done("duplicate")
            try:
                await self.webhook.send(self.payload(esc), esc.message_id)
            except DeliveryError as exc:
                record_failure(span, exc)
                await send_dead_letter(self.producer, self.codec, self.settings,
                                       dead_letter_for(msg, "sink.escalations", exc, esc.message_id))
                return self._done("dead_lettered")
            ttl = self.settings.idempotency_ttl_s
            await self._redis(lambda: self.redis.set(key, "1", nx=True, ex=ttl))
            return self._done("ticketed")

    async def handle_batch(self, messages: list[Any]) -> dict[tuple[str, int], int]:
        return await in_partition_order(messages, self.handle)

    def lane(self) -> Lane:
        """chat.escalations on the consumer runtime: per partition in order, acks in offset order."""
        return Lane("sink.escalations", [self.settings.topics.escalations], self.handle,
                    max_in_flight=self.settings.max_in_flight, max_backlog=self.settings.stream_buffer_maxsize,
                    chain_key=by_partition)


async def run(settings: Any, url: str, preset: str = "generic", stop: asyncio.Event | None = None,
              group: str | None = None) -> None:
    from streams.replay.namespace import refuse_replay_namespace

    refuse_replay_namespace(settings.topic_prefix, "sink escalations")  # replays never open tickets or CRM records
    import httpx
    import redis.asyncio as aioredis

    from connectors.consume import make_consumer, run_edge
    from streams.codec import make_codec
    from streams.runtime.clients import make_producer
    from streams.tracing import setup_tracing, shutdown_tracing

    setup_tracing(settings, "chatstream-sink-escalations")
    stop = stop or asyncio.Event()
    codec = make_codec(settings)
    producer = make_producer(settings)
    redis = aioredis.from_url(settings.redis_connection_url)
    async with httpx.AsyncClient(timeout=settings.sink_timeout_s) as http:
        sink = EscalationSink(settings, Webhook(settings, url, http), redis, producer, codec, preset)
        consumer = make_consumer(settings, group or f"{settings.consumer_group}-sink-escalations")
        try:
            await run_edge(consumer, sink.lane(), stop, grace_s=settings.shutdown_grace_s)
        finally:
            log.info("escalation sink stopping: %s", sink.counts)
            await producer.close(10)
            await redis.aclose()
            shutdown_tracing()
