"""The deliver service: each reply on chat.outbound sent once through its channel.

Per record: decode; skip web (the gateway's SSE tail serves browsers) and channels without an API;
skip if ``delivered:{message_id}`` exists; wait for the channel's rate limit; send, retrying
transient failures with full-jitter backoff that honours Retry-After; on success ``SET NX`` the
marker. Permanent failures (4xx other than 429, bad addressing) and replies still failing after
``deliver_max_attempts`` go to chat.deadletter. Offsets are committed after the batch is done.

Remaining window: a crash after the channel accepted a reply and before the marker is written sends
that reply again on restart. Slack, WhatsApp and the Bot Framework have no idempotency key on these
endpoints, so this window can only be narrowed (the marker is written right after the 2xx), not
closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any, Awaitable, Callable, Protocol

from connectors.consume import dead_letter_for, in_partition_order, send_dead_letter
from connectors.delivery.drafts import Drafts, EditableClient
from connectors.delivery.http import DeliveryError, Permanent, Transient
from connectors.feedback import slack_reply_key
from connectors.gateway.limits import AsyncRateLimiter
from processors.backoff import is_transient_redis_error, retry_transient
from processors.records import ChatDelta, ChatResponse
from streams.codec import Codec, DecodeError
from streams.tracing import consumer_span, record_failure

log = logging.getLogger("chatstream.deliver")

API_CHANNELS = ("slack", "whatsapp", "teams")


class ChannelClient(Protocol):
    channel: str

    async def send(self, resp: ChatResponse) -> dict[str, str]: ...


def delivered_key(message_id: str) -> str:
    return f"delivered:{message_id}"


class Deliverer:
    def __init__(
        self,
        settings: Any,
        clients: dict[str, ChannelClient],
        redis: Any,
        producer: Any,
        codec: Codec,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.redis = redis
        self.producer = producer
        self.codec = codec
        self.sleep = sleep
        self.limits = {ch: AsyncRateLimiter(rate) for ch, rate in settings.deliver_rate_per_s.items() if rate > 0}
        self.counts: dict[str, int] = {}
        self.drafts = Drafts(redis, min_interval_s=settings.deliver_draft_update_interval_s,
                             ttl_s=settings.idempotency_ttl_s)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    async def _redis(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        # Redis down: wait (the partition pauses) rather than risk a double or a lost reply.
        return await retry_transient(fn, is_transient=is_transient_redis_error, base_s=0.2, max_s=5, deadline_s=600)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.deliver_backoff_max_s * 4)
        cap = min(self.settings.deliver_backoff_max_s, self.settings.deliver_backoff_base_s * (2**attempt))
        return random.uniform(cap / 2, cap)

    async def send_with_retries(
        self, client: ChannelClient, resp: ChatResponse, send: Callable[[], Awaitable[dict[str, str]]] | None = None
    ) -> dict[str, str]:
        limiter = self.limits.get(client.channel)
        attempt = 0
        while True:
            if limiter is not None:
                await limiter.acquire()
            try:
                try:
                    return await (send() if send is not None else client.send(resp))
                except DeliveryError:
                    raise
                except Exception as unexpected:  # e.g. a 200 with a body that is not JSON
                    raise Transient(f"{client.channel}: {type(unexpected).__name__}: {unexpected}") from unexpected
            except DeliveryError as exc:
                attempt += 1
                if exc.permanent or attempt >= self.settings.deliver_max_attempts:
                    raise
                delay = self.backoff(attempt - 1, exc.retry_after)
                log.warning("%s delivery of %s failed (attempt %d), retrying in %.1fs: %s",
                            client.channel, resp.message_id, attempt, delay, exc)
                self._count("retried")
                await self.sleep(delay)

    async def handle_delta(self, msg: Any) -> str:
        """A provisional piece on chat.deltas: post or edit the placeholder on channels that can edit."""
        try:
            delta = self.codec.decode(msg.value(), ChatDelta)
        except DecodeError as exc:
            log.warning("skipping an undecodable delta at %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            return self._done("draft_undecodable")
        client = self.clients.get(delta.channel)
        if not isinstance(client, EditableClient):
            return self._done("draft_not_editable")
        key = delivered_key(delta.message_id)
        try:
            outcome = await self.drafts.on_delta(client, delta, lambda: self._redis(lambda: self.redis.exists(key)))
        except Exception as exc:  # best effort (channel or Redis trouble): the final reply still goes out
            log.warning("%s draft of %s failed: %s: %s", delta.channel, delta.message_id, type(exc).__name__, exc)
            outcome = "draft_failed"
        return self._done(outcome)

    async def handle(self, msg: Any) -> str:
        """Deliver one chat.outbound record (or a chat.deltas piece); returns the outcome."""
        if msg.topic() == self.settings.topics.deltas:
            return await self.handle_delta(msg)
        headers = msg.headers() or []
        with consumer_span(msg.topic(), headers, {"messaging.system": "kafka", "messaging.operation": "process",
                                                 "messaging.kafka.partition": msg.partition(),
                                                 "messaging.kafka.offset": msg.offset()}) as span:
            try:
                resp = self.codec.decode(msg.value(), ChatResponse)
            except DecodeError as exc:
                record_failure(span, exc)
                await send_dead_letter(self.producer, self.codec, self.settings, dead_letter_for(msg, "deliver", exc))
                return self._done("dead_lettered")
            span.set_attribute("messaging.message.id", resp.message_id)
            span.set_attribute("chat.channel", resp.channel)
            if resp.channel not in API_CHANNELS:
                return self._done("skipped_web" if resp.channel == "web" else "skipped_no_channel_api")
            if not resp.text.strip():
                return self._done("skipped_empty")
            client = self.clients.get(resp.channel)
            if client is None:
                exc = Permanent(f"channel {resp.channel} is not configured for delivery")
                await send_dead_letter(self.producer, self.codec, self.settings,
                                       dead_letter_for(msg, "deliver", exc, resp.message_id))
                return self._done("dead_lettered")
            key = delivered_key(resp.message_id)
            async with self.drafts.lock(resp.message_id):  # no placeholder may be posted meanwhile
                if await self._redis(lambda: self.redis.exists(key)):
                    self.drafts.finish(resp.message_id)
                    return self._done("duplicate")
                draft = None
                if isinstance(client, EditableClient):
                    draft = await self._redis(lambda: self.drafts.handle_for(resp.message_id))
                send = (lambda: client.finish_draft(draft, resp)) if draft else None
                try:
                    result = await self.send_with_retries(client, resp, send)
                except DeliveryError as exc:
                    record_failure(span, exc)
                    await send_dead_letter(self.producer, self.codec, self.settings,
                                           dead_letter_for(msg, "deliver", exc, resp.message_id))
                    return self._done("dead_lettered")
                ttl = self.settings.idempotency_ttl_s
                await self._redis(lambda: self.redis.set(key, "1", nx=True, ex=ttl))
                self.drafts.finish(resp.message_id)
            span.set_attribute("chatstream.deliver.replaced_draft", bool(draft))
            if resp.channel == "slack" and result.get("ts"):
                turn = json.dumps({"message_id": resp.message_id, "session_id": resp.session_id, "user_id": resp.user_id})
                await self._redis(lambda: self.redis.set(slack_reply_key(result["channel"], result["ts"]), turn, ex=ttl))
            return self._done("delivered")

    def _done(self, outcome: str) -> str:
        self._count(outcome)
        return outcome

    async def handle_batch(self, messages: list[Any]) -> dict[tuple[str, int], int]:
        return await in_partition_order(messages, self.handle)


def build_clients(settings: Any, http: Any) -> dict[str, ChannelClient]:
    """The channel clients whose credentials are set; the others are logged as disabled."""
    from connectors.delivery.slack import SlackClient
    from connectors.delivery.teams import TeamsClient
    from connectors.delivery.whatsapp import WhatsAppClient

    clients: dict[str, ChannelClient] = {}
    for cls in (SlackClient, WhatsAppClient, TeamsClient):
        try:
            clients[cls.channel] = cls(settings, http)
            log.info("deliver: channel %s enabled", cls.channel)
        except ValueError as exc:
            log.warning("deliver: channel %s disabled (%s); its replies are dead-lettered", cls.channel, exc)
    return clients


async def run(settings: Any, stop: asyncio.Event | None = None) -> None:
    """``chatstream deliver`` until ``stop`` (or a signal) ends it."""
    import httpx
    import redis.asyncio as aioredis

    from connectors.consume import make_consumer, run_loop
    from streams.codec import make_codec
    from streams.producer import AsyncProducer
    from streams.tracing import setup_tracing, shutdown_tracing

    setup_tracing(settings, "chatstream-deliver")
    stop = stop or asyncio.Event()
    codec = make_codec(settings)
    producer = AsyncProducer(settings.kafka_bootstrap)
    redis = aioredis.from_url(settings.redis_url)
    async with httpx.AsyncClient(timeout=settings.deliver_timeout_s) as http:
        deliverer = Deliverer(settings, build_clients(settings, http), redis, producer, codec)
        consumer = make_consumer(settings, settings.deliver_group)
        try:
            await run_loop(consumer, [settings.topics.outbound, settings.topics.deltas], deliverer.handle_batch, stop)
        finally:
            log.info("deliver stopping: %s", deliverer.counts)
            await producer.close(10)
            await redis.aclose()
            shutdown_tracing()
