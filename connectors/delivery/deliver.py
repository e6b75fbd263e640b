"""The deliver service: each reply on chat.outbound sent once through its channel.

Per record: decode; skip web (the gateway's SSE tail serves browsers) and channels without an API;
skip if ``delivered:{message_id}`` exists; wait for the channel's rate limit; write
``delivering:{message_id}`` (the time of this attempt); send, retrying transient failures with
full-jitter backoff that honours Retry-After; on success ``SET NX`` the delivered marker. Permanent
failures (4xx other than 429, bad addressing) and replies still failing after
``deliver_max_attempts`` go to chat.deadletter. It runs on the consumer runtime (``lane``): offsets
are committed once every reply before them is done.

The crash window (the channel accepted a reply, deliver died before the marker): a record whose
``delivering`` marker exists without a ``delivered`` one was maybe sent. Before sending it again,
a channel that can be asked (``find_sent``) is asked whether it already holds that reply:

- Slack: every reply carries message metadata ``chatstream_reply {message_id}``; the thread
  (conversations.replies) or channel (conversations.history) since the attempt is searched for it.
  What is left: a crash after Slack accepted and before its history shows the message (Slack's own
  replication lag), or a bot token without the history scopes (then we resend and log it).
- WhatsApp Cloud API: no idempotency key and no way to list sent messages; the reply carries
  ``biz_opaque_callback_data`` = message_id, which comes back only in status webhooks. Not checked:
  the window stays as small as writing a marker right after the 2xx.
- Teams (Bot Connector): no idempotency key, and Teams does not serve a conversation's activities to
  bots; same as WhatsApp.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any, Awaitable, Callable, Protocol

from connectors.consume import (
    dead_letter_for,
    decode_or_dead_letter,
    in_partition_order,
    process_span,
    send_dead_letter,
)
from connectors.delivery.drafts import Drafts, EditableClient
from connectors.delivery.http import DeliveryError, Permanent, Transient
from connectors.feedback import slack_reply_key
from connectors.gateway.limits import AsyncRateLimiter
from processors.backoff import is_transient_redis_error, retry_transient
from processors.records import ChatDelta, ChatResponse
from streams.codec import Codec, DecodeError
from streams.runtime.lane import Lane, by_partition
from streams.tracing import record_failure

log = logging.getLogger("chatstream.deliver")

API_CHANNELS = ("slack", "whatsapp", "teams")


class ChannelClient(Protocol):
    channel: str

    async def send(self, resp: ChatResponse) -> dict[str, str]: ...


class FindsSent(Protocol):
    """A channel that can tell whether it already holds a reply (to make resends after a crash safe)."""

    async def find_sent(self, resp: ChatResponse, since_ms: int) -> dict[str, str] | None: ...


def delivered_key(message_id: str) -> str:
    return f"delivered:{message_id}"


def delivering_key(message_id: str) -> str:
    """Set right before a send (value: ms since epoch); with no delivered marker it means "maybe sent"."""
    return f"delivering:{message_id}"


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
        # the draft lock outlasts a channel call in flight (Teams: a token fetch, then the edit)
        self.drafts = Drafts(redis, min_interval_s=settings.deliver_draft_update_interval_s,
                             ttl_s=settings.idempotency_ttl_s, lock_ttl_s=3 * settings.deliver_timeout_s)

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
        """Deliver one chat.outbound record (or a chat.deltas piece); returns the outcome (for counting and tests)."""
        if msg.topic() == self.settings.topics.deltas:
            return await self.handle_delta(msg)
        with process_span(msg, "deliver") as span:
            resp = await decode_or_dead_letter(msg, ChatResponse, "deliver", codec=self.codec, producer=self.producer,
                                               settings=self.settings, span=span)
            if resp is None:
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
            key, attempt_key = delivered_key(resp.message_id), delivering_key(resp.message_id)
            ttl = self.settings.idempotency_ttl_s
            async with self.drafts.lock(resp.message_id):
                if await self._redis(lambda: self.redis.exists(key)):
                    return self._done("duplicate")
                draft = None
                if isinstance(client, EditableClient):
                    # across deliver processes: any provisional edit has landed, none starts after this
                    draft = await self.drafts.finish(resp.message_id, self._redis)
                # A placeholder is edited in place: an edit repeated after a crash only writes the same
                # final text again, so it needs neither the delivering marker nor find_sent. Posting a
                # new message is what can double, so only that path writes the marker and asks first.
                result = None if draft else await self._sent_before_a_crash(client, resp, attempt_key, span)
                if result is None:
                    if draft:
                        send = lambda: client.finish_draft(draft, resp)  # noqa: E731
                    else:
                        now = str(int(time.time() * 1000))
                        await self._redis(lambda: self.redis.set(attempt_key, now, ex=ttl))
                        send = None
                    try:
                        result = await self.send_with_retries(client, resp, send)
                    except DeliveryError as exc:
                        record_failure(span, exc)
                        await send_dead_letter(self.producer, self.codec, self.settings,
                                               dead_letter_for(msg, "deliver", exc, resp.message_id))
                        return self._done("dead_lettered")
                    outcome = "delivered"
                else:
                    outcome = "found_already_sent"
                await self._redis(lambda: self.redis.set(key, "1", nx=True, ex=ttl))
                await self._redis(lambda: self.redis.delete(attempt_key))
            span.set_attribute("chatstream.deliver.replaced_draft", bool(draft))
            if resp.channel == "slack" and result.get("ts"):
                turn = json.dumps({"message_id": resp.message_id, "session_id": resp.session_id, "user_id": resp.user_id})
                await self._redis(lambda: self.redis.set(slack_reply_key(result["channel"], result["ts"]), turn, ex=ttl))
            return self._done(outcome)

    async def _sent_before_a_crash(self, client: ChannelClient, resp: ChatResponse, attempt_key: str,
                                   span: Any) -> dict[str, str] | None:
        """The channel's record of this reply when an earlier attempt may have been accepted, else None."""
        started = await self._redis(lambda: self.redis.get(attempt_key))
        if started is None or not hasattr(client, "find_sent"):
            return None
        since_ms = int(started) - 60_000  # clocks of this host and the channel's differ a little
        try:
            found = await retry_transient(
                lambda: client.find_sent(resp, since_ms),  # type: ignore[attr-defined]
                is_transient=lambda exc: isinstance(exc, DeliveryError) and not exc.permanent,
                base_s=0.5, max_s=5, deadline_s=60, sleep=self.sleep,
            )
        except DeliveryError as exc:  # no history scope, or the API keeps failing: at least once
            log.warning("%s: cannot check whether %s was sent before a crash (%s); sending it",
                        client.channel, resp.message_id, exc)
            return None
        span.add_event("earlier attempt checked", {"found": found is not None})
        if found is not None:
            log.info("%s: %s was accepted before a crash; not sending it again", client.channel, resp.message_id)
        return found

    def _done(self, outcome: str) -> str:
        self._count(outcome)
        return outcome

    async def handle_batch(self, messages: list[Any]) -> dict[tuple[str, int], int]:
        return await in_partition_order(messages, self.handle)

    def lane(self) -> Lane:
        """chat.outbound and chat.deltas on the consumer runtime (``handle`` tells them apart by topic):
        per partition in order, acks in offset order."""
        return Lane("deliver", [self.settings.topics.outbound, self.settings.topics.deltas], self.handle,
                    max_in_flight=self.settings.max_in_flight, max_backlog=self.settings.stream_buffer_maxsize,
                    chain_key=by_partition)


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
    from streams.replay.namespace import refuse_replay_namespace

    refuse_replay_namespace(settings.topic_prefix, "deliver")  # a replay must never post to a channel
    import httpx
    import redis.asyncio as aioredis

    from connectors.consume import make_consumer, run_edge
    from streams.codec import make_codec
    from streams.runtime.clients import make_producer
    from streams.tracing import setup_tracing, shutdown_tracing

    setup_tracing(settings, "chatstream-deliver")
    stop = stop or asyncio.Event()
    codec = make_codec(settings)
    producer = make_producer(settings)
    redis = aioredis.from_url(settings.redis_connection_url)
    async with httpx.AsyncClient(timeout=settings.deliver_timeout_s) as http:
        deliverer = Deliverer(settings, build_clients(settings, http), redis, producer, codec)
        consumer = make_consumer(settings, settings.deliver_group)
        try:
            await run_edge(consumer, deliverer.lane(), stop, grace_s=settings.shutdown_grace_s)
        finally:
            log.info("deliver stopping: %s", deliverer.counts)
            await producer.close(10)
            await redis.aclose()
            shutdown_tracing()
