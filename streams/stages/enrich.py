"""Enrich: admission (input rules, duplicates, rate limit) and session context from Redis."""

from __future__ import annotations

import time
from typing import Callable

from opentelemetry.trace import Span

from processors.records import ChatRequest, ChatResponse, Status
from streams.deadletter import RejectedInput
from streams.message import InboundMessage, OutboundRecord
from streams.stages.replies import ReplyingStage


def admission_problem(request: ChatRequest, msg: InboundMessage, channels: list[str], max_chars: int) -> str | None:
    """Why a decodable request cannot be answered normally (None when it can).

    Records nobody could be answered on (unknown channel, wrong key) raise ``RejectedInput`` and
    go to the dead-letter topic; problems with the text itself get a REJECTED reply the user sees.
    """
    if request.channel not in channels:
        raise RejectedInput(f"unknown channel {request.channel!r}; known channels: {', '.join(channels)}")
    if not request.message_id.strip() or not request.session_id.strip():
        raise RejectedInput("message_id and session_id must not be empty")
    if msg.key is not None and msg.session_key != request.session_id:
        raise RejectedInput(
            f"record key {msg.session_key!r} is not the session_id {request.session_id!r}; "
            "producers must key every record by session_id so a session stays in order"
        )
    if not request.text.strip():
        return "Your message was empty; please type a question."
    if len(request.text) > max_chars:
        return (
            f"Your message is {len(request.text):,} characters long; the limit is {max_chars:,}. "
            "Please shorten it and send it again."
        )
    return None


class EnrichStage(ReplyingStage):
    """Writes replies too: rejections and rate limits never reach the later stages.

    One Redis round trip per turn, shared by the turns in flight (``SessionStore.admit``: duplicate
    check, rate token, append and load in one script); a reply it writes (REJECTED, RATE_LIMITED)
    adds the reply claim, which checks the replied marker again atomically.
    """

    name = "enrich"
    input_type = ChatRequest
    # told about each admitted request as soon as its one admission round trip says so (the worker
    # wires it to its retrieve stage, which starts embedding the question during the hop to it);
    # duplicates and rate-limited turns start nothing; must not block or raise
    on_admitted: Callable[[ChatRequest], None] | None = None

    async def process(self, request: ChatRequest, msg: InboundMessage, span: Span) -> list[OutboundRecord]:
        started = time.perf_counter()
        problem = admission_problem(request, msg, self.settings.channels, self.settings.max_text_chars)
        await self.markers.ready()  # a marker recovery in progress: its markers first
        if problem is not None:
            # no admit call: the reply claim finds an existing marker (a repeat is dropped there), and
            # a rejected message spends no rate token and is not appended
            outputs = await self._claimed(request, span, self._reply(request, problem, Status.REJECTED))
            if outputs:
                span.add_event("rejected", {"reason": problem})
            return outputs
        admission = await self.sessions.admit(request)
        if admission.outcome == "replied":
            span.add_event("duplicate message_id dropped")
            return []
        if admission.outcome == "rate_limited":
            retry_after = admission.retry_after_s
            span.add_event("rate limited", {"retry_after_s": retry_after})
            text = f"You are sending messages faster than we can answer. Please wait {max(1, round(retry_after))} s and try again."
            return await self._claimed(request, span, self._reply(request, text, Status.RATE_LIMITED))
        turn = admission.turn
        assert turn is not None, "an admitted turn comes with its session context"
        if self.on_admitted is not None:
            self.on_admitted(request)
        turn.stage_ms[self.name] = int((time.perf_counter() - started) * 1000)
        return [OutboundRecord(self.topics.enriched, request.session_id, turn)]

    async def _claimed(self, request: ChatRequest, span: Span, reply: OutboundRecord) -> list[OutboundRecord]:
        return [reply] if await self.claim_reply(request.message_id, span) else []

    def _reply(self, request: ChatRequest, text: str, status: Status) -> OutboundRecord:
        response = ChatResponse.for_request(request, text, status, reason=text)
        return OutboundRecord(self.topics.outbound, request.session_id, response)

    async def after_emit(self, request: ChatRequest, outputs: list[OutboundRecord]) -> None:
        for out in outputs:
            if out.topic == self.topics.outbound:
                await self.mark_replied(out.record)
