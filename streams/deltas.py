"""Provisional answer pieces of one turn, redacted and published to chat.deltas while it generates.

The generate stage hands ``TurnDeltas.on_delta`` to the generator; every raw piece goes through the
hold-back ``StreamRedactor`` and what is safe to show becomes a ``ChatDelta`` (message id, attempt,
seq, text, final flag) keyed by session_id, with the turn's trace context in its headers. The first text
goes out at once (time to first token); after that, text is gathered for at most ``interval_s``
(``LLM_STREAM_DELTA_INTERVAL_MS``, 250 ms) per record, so a 25-tokens-per-second stream costs 4 records
a second instead of 25 in the worker, Kafka, the gateway and the browser, and still reads as flowing
text (deliver's placeholder edits have their own, slower pace). Sends are
started at once and in order (librdkafka keeps the order of one partition; the producer is
idempotent) but never awaited one by one on the generation path: ``finish`` publishes the final
piece and then awaits all of them, before the turn's ChatTurn goes on to validate, so a delta is
either on Kafka before the final reply exists or its loss is counted and logged, never silent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from opentelemetry.trace import Span

from processors.records import ChatDelta, ChatRequest, new_attempt_id
from processors.validation.stream_redactor import StreamRedactor
from streams import metrics, tracing

log = logging.getLogger(__name__)


class TurnDeltas:
    def __init__(
        self,
        *,
        producer: Any,
        codec: Any,
        topic: str,
        request: ChatRequest,
        allowed: list[str],
        holdback_chars: int = 0,
        interval_s: float = 0.1,
        span: Span | None = None,
        clock=time.perf_counter,
    ) -> None:
        self.producer = producer
        self.codec = codec
        self.topic = topic
        self.request = request
        self.redactor = StreamRedactor(allowed=allowed, holdback_chars=holdback_chars)
        self.headers = tracing.inject([])  # the turn's context, written once for all its pieces
        self.span = span
        self._clock = clock
        self.started = clock()
        self.first_shown_ms: float | None = None
        self.seq = 0
        # this generation's own id: should the turn be generated again (its worker died mid-answer),
        # the new pieces start at seq 0 under another id and readers replace, not extend, what was shown
        self.attempt = new_attempt_id()
        self.interval_s = interval_s
        self._pending = ""
        self._timer: asyncio.TimerHandle | None = None
        self._sends: list[asyncio.Future] = []

    def on_delta(self, raw: str) -> None:
        """A raw piece from the provider; publishes what is safe to show (the first at once)."""
        text = self.redactor.feed(raw)
        if not text:
            return
        if self.seq == 0 or self.interval_s <= 0:
            self._publish(text, final=False)
            return
        self._pending += text
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._flush_pending)

    def _flush_pending(self) -> None:
        self._timer = None
        if self._pending:
            text, self._pending = self._pending, ""
            self._publish(text, final=False)

    def _publish(self, text: str, *, final: bool) -> None:
        if self.first_shown_ms is None and text:
            self.first_shown_ms = (self._clock() - self.started) * 1000
        req = self.request
        delta = ChatDelta(
            message_id=req.message_id,
            session_id=req.session_id,
            channel=req.channel,
            seq=self.seq,
            text=text,
            final=final,
            metadata=dict(req.metadata),
            tenant=req.tenant,
            attempt=self.attempt,
        )
        self.seq += 1
        data = self.codec.encode(delta, topic=self.topic)
        self._sends.append(
            asyncio.ensure_future(self.producer.send(self.topic, data, key=req.session_id, headers=self.headers))
        )

    async def finish(self, timeout_s: float = 10.0) -> int:
        """Publish the rest (final piece) and wait for every piece; returns how many failed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        text, self._pending = self._pending + self.redactor.flush(), ""
        if text or self.seq:  # nothing streamed at all (e.g. retrieval down): the reply says it all
            self._publish(text, final=True)
        if not self._sends:
            return 0
        done, pending = await asyncio.wait(self._sends, timeout=timeout_s)
        for task in pending:
            task.cancel()
        failed = len(pending) + sum(1 for t in done if t.exception() is not None)
        metrics.deltas_published(len(self._sends) - failed, "ok")
        if failed:
            metrics.deltas_published(failed, "failed")
            log.warning("%d of %d provisional pieces of %s were not published (the final reply still is)",
                        failed, len(self._sends), self.request.message_id)
            if self.span is not None:
                self.span.add_event("deltas lost", {"chatstream.deltas.failed": failed})
        return failed
