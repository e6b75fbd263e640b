"""Exactly one reply per message_id, shared by the stages that write ``chat.outbound``.

Order of events for a reply: claim it in Redis (a fencing token), produce it (acks=all), mark
``message_id`` as replied (checking the token), then ack the input.

- The claim is taken at the end of ``process``, after the slow work, atomically with the
  replied-marker check (``SessionStore.claim_reply``). A turn that got stuck past
  ``shutdown_grace_s`` while its partition moved on finds, when it resumes, either the marker of
  the new owner's reply (it drops the turn) or the new owner's live claim (it waits for it). Only one
  holder of a live claim produces; the marker is written whatever the token says (the reply is on
  Kafka), and a token found stale at marking time is logged and counted as ``reply_claim_lost``:
  that needs a produce slower than ``reply_claim_ttl_s`` on the old owner while the new one replied.
- A crash between produce and mark would let a reprocessed input reply twice; that window is closed
  by ``recover_markers``, which reads the tail of ``chat.outbound`` and marks every reply already
  there: at start-up before any stage consumes, and again whenever this worker takes over partitions
  of a replying stage (a surviving worker inherits a dead one's turns; the dead one's last replies
  are on Kafka by then, since its partitions move only after its session expired). A claim the dead
  worker left behind is waited out (or found replied by that recovery).

Why Redis claims and not Kafka transactions: a transaction would have to cover the produce and the
input's offset commit, so the ordered in-flight window (64 turns of many partitions acked strictly
in offset order) would commit one transaction per ack batch or per turn: two to three extra broker
round trips per turn, and read_committed consumers downstream that wait for the slowest open
transaction. The Redis claim costs one round trip per reply (the mark was already one), does not
depend on which Kafka client the runtime uses, and fences the Redis writes a transaction would not.
Repeats that arrive later (a channel retry, an upstream stage reprocessing after a crash) are dropped
by enrich's admission (``SessionStore.admit`` checks the marker first) and by validate's claim (which
finds the marker). Claims and marks of turns in flight together share one Redis pipeline
(``SessionStore`` coalesces them). ``ReplyingStage`` gives the stages that write replies (enrich:
rejections and rate limits; validate: answers) this protocol once.
"""

from __future__ import annotations

import asyncio
import logging
import math

from processors.backoff import retry_transient
from opentelemetry.trace import Span

from processors.records import ChatRequest, ChatResponse
from processors.session import ReplyClaim, SessionStore
from streams import metrics
from streams.codec import Codec, DecodeError
from streams.config import Settings
from streams.stage import Stage
from streams.stages import clients
from streams.topic_reader import read_topic

log = logging.getLogger(__name__)


def _read_tail(settings: Settings, codec: Codec, per_partition: int) -> list[str]:
    """message_ids of the last ``per_partition`` replies of every outbound partition.

    A partition that does not deliver raises ``TimeoutError`` (transient: the caller retries): a
    partial read would leave replies unmarked, and that is the window this module closes.
    """
    ids: list[str] = []
    for msg in read_topic(settings, settings.topics.outbound, tail=per_partition, timeout_s=10.0):
        try:
            ids.append(codec.decode(msg.value(), ChatResponse).message_id)
        except DecodeError:
            continue
    return ids


async def recover_markers(settings: Settings, codec: Codec, sessions: SessionStore, per_partition: int = 5000) -> int:
    """Mark every reply found in the tail of chat.outbound; returns how many were found."""
    ids = await asyncio.to_thread(_read_tail, settings, codec, per_partition)
    for start in range(0, len(ids), 1000):
        await sessions.mark_replied(ids[start : start + 1000])
    if ids:
        log.info("reply recovery: %d replies found in the tail of %s", len(ids), settings.topics.outbound)
    return len(ids)


class MarkerRecovery:
    """``recover_markers`` on demand, with a gate turns wait on while a recovery runs.

    One per worker process (``shared_recovery``): enrich and validate read the same outbound tail into
    the same Redis, so they share the start-up read and the reads after a rebalance.
    """

    def __init__(self, settings: Settings, codec: Codec, sessions: SessionStore) -> None:
        self.settings = settings
        self.codec = codec
        self.sessions = sessions
        self._done = asyncio.Event()
        self._initial: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._task_reading = False

    async def ensure_recovered(self) -> int:
        """The start-up recovery, run once however many stages ask for it."""
        if self._initial is None:
            self._initial = asyncio.ensure_future(self._recover_once())
        return await asyncio.shield(self._initial)

    async def _recover_once(self) -> int:
        self._done.clear()
        try:
            return await recover_markers(self.settings, self.codec, self.sessions)
        finally:
            self._done.set()

    def recover_in_background(self) -> None:
        """Start a recovery now (Redis or Kafka trouble is retried); ``ready`` waits for it.

        Requests made before a scheduled recovery began reading share it (both stages ask after the
        same rebalance); a request during a read restarts it so the read includes what came since.
        """
        if self._task is not None and not self._task.done():
            if not self._task_reading:
                return
            self._task.cancel()
        self._done.clear()
        self._task_reading = False
        self._task = asyncio.ensure_future(self._recover_with_retries())

    async def _recover_with_retries(self) -> None:
        self._task_reading = True

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            if attempt in (1, 5) or attempt % 20 == 0:
                log.warning("reply recovery failed (attempt %d), retrying: %s", attempt, exc)

        # any failure (Redis, Kafka, a slow partition) is worth another try; a newer recovery
        # cancels this one and opens the gate itself
        await retry_transient(
            lambda: recover_markers(self.settings, self.codec, self.sessions),
            is_transient=lambda exc: True, base_s=0.2, max_s=5.0, deadline_s=math.inf, on_retry=on_retry,
        )
        self._done.set()

    async def ready(self) -> None:
        await self._done.wait()


_shared: dict[tuple[str, str], MarkerRecovery] = {}


def shared_recovery(settings: Settings, codec: Codec, sessions: SessionStore) -> MarkerRecovery:
    key = (settings.topics.outbound, settings.redis_url)
    if key not in _shared:
        _shared[key] = MarkerRecovery(settings, codec, sessions)
    return _shared[key]


class ReplyingStage(Stage):
    """A stage that writes ``chat.outbound``: recovers markers, drops repeats, claims and marks what it sent."""

    sessions: SessionStore
    markers: MarkerRecovery

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._claims: dict[str, ReplyClaim] = {}  # message_id -> the claim taken for the reply in flight

    async def start(self, codec: Codec) -> None:
        self.sessions = clients.session_store(self.settings)
        self.markers = shared_recovery(self.settings, codec, self.sessions)
        await self.markers.ensure_recovered()

    def on_partitions_assigned(self, newly_assigned: set[tuple[str, int]]) -> None:
        # A worker that died between producing a reply and marking it left an unmarked reply on
        # chat.outbound; its partitions come here only once it is gone, so reading the tail now
        # sees every reply it produced. Turns wait for that read (``ready``) before their
        # replied check (enrich's admission, either stage's claim).
        if any(topic == self.source for topic, _ in newly_assigned):
            self.markers.recover_in_background()

    async def claim_reply(self, message_id: str, span: Span) -> bool:
        """Take the reply claim right before the reply is returned for producing; False = drop the turn.

        Waits while another worker holds a live claim on this message_id (it is producing the same
        reply now, or died and its claim runs out within ``reply_claim_ttl_s``).
        """
        ttl_ms = max(1, int(self.settings.reply_claim_ttl_s * 1000))
        waited = False
        while True:
            await self.markers.ready()
            claim = await self.sessions.claim_reply(message_id, ttl_ms)
            if claim.state == "ok":
                self._claims[message_id] = claim
                span.set_attribute("chatstream.reply.claim_token", claim.token)
                return True
            if claim.state == "replied":
                span.add_event("duplicate message_id dropped at the reply claim")
                return False
            if not waited:
                span.add_event("reply claim held by another worker: waiting", {"wait_ms": claim.wait_ms})
                waited = True
            # poll: the holder marks within milliseconds, or its claim expires after wait_ms
            await asyncio.sleep(min(max(claim.wait_ms, 10), 200) / 1000)

    async def mark_replied(self, response: ChatResponse, request: ChatRequest | None = None) -> None:
        """Mark the produced reply (checking its claim); given the ``request``, also record the reply
        in the session history, in the same Redis round trip when the claim is known."""
        claim = self._claims.pop(response.message_id, None)
        if claim is None:  # no claim (after_emit retried after a failure): a plain marker
            await self.sessions.mark_replied([response.message_id])
            if request is not None:
                await self.sessions.record_reply(request, response)
            ours = True
        elif request is None:
            ours = await self.sessions.mark_claimed(claim)
        else:
            ours = await self.sessions.finish_reply(claim, request, response)
        if not ours:
            metrics.reply_claim_lost(self.name)
            log.error(
                "reply to %s was produced after its claim (token %d) passed to another worker that replied too",
                response.message_id, claim.token,
            )
        metrics.reply_produced(
            response.status.value, response.latency_ms, response.model, response.prompt_tokens, response.completion_tokens
        )
