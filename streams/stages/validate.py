"""Validate: the last gate before a user sees anything; the only writer of answers."""

from __future__ import annotations

import time

from opentelemetry.trace import Span, Status as SpanStatus, StatusCode

from processors.records import ChatTurn, Status
from streams import metrics
from streams.codec import Codec
from streams.message import InboundMessage, OutboundRecord
from streams.pipeline import LLM_TIMING
from streams.stages.replies import ReplyingStage


class ValidateStage(ReplyingStage):
    name = "validate"
    input_type = ChatTurn

    async def start(self, codec: Codec) -> None:
        from processors.validation import Validator

        self.validator = Validator.from_settings(self.settings)
        await super().start(codec)

    async def process(self, turn: ChatTurn, msg: InboundMessage, span: Span) -> list[OutboundRecord]:
        started = time.perf_counter()
        verdict = self.validator.validate(turn)
        response = verdict.response
        # The claim is also the duplicate check (atomic with the replied marker; a separate check
        # before it was one more Redis round trip per turn and decided nothing the claim does not).
        # A repeat, or a turn another worker answered while it was on its way here, is dropped; its
        # reply is on chat.outbound, but a crash between producing it and recording it (after_emit)
        # would leave the session history without the answer for good: record it now. The RECORD
        # script appends an answer once per message_id, so a repeat that was recorded changes nothing.
        if not await self.claim_reply(turn.request.message_id, span):
            await self.sessions.record_reply(turn.request, response)
            return []
        response.stage_ms = dict(turn.stage_ms)
        response.stage_ms[LLM_TIMING] = int(turn.llm_latency_ms)
        response.stage_ms[self.name] = int((time.perf_counter() - started) * 1000)
        for rule in verdict.failed_rules:
            metrics.validation_failed(rule)
        span.set_attributes(
            {"chatstream.reply.status": response.status.value, "chatstream.reply.groundedness": response.groundedness}
        )
        if verdict.failed_rules:
            span.add_event("validation failed", {"rules": list(verdict.failed_rules)})
        if response.status in (Status.BLOCKED, Status.ESCALATED):
            span.set_status(SpanStatus(StatusCode.ERROR, f"{response.status.value}: {response.reason or ''}"))
        outputs = [OutboundRecord(self.topics.outbound, response.session_id, response)]
        if verdict.escalation is not None:
            # before the reply (delivered in order, streams.stage): a reply on Kafka means its escalation
            # is there too; a crash in between re-sends the escalation, which sinks dedupe by message_id
            outputs.insert(0, OutboundRecord(self.topics.escalations, response.session_id, verdict.escalation))
        return outputs

    async def after_emit(self, turn: ChatTurn, outputs: list[OutboundRecord]) -> None:
        for out in outputs:
            if out.topic == self.topics.outbound:
                await self.mark_replied(out.record, turn.request)  # marker and history in one round trip
