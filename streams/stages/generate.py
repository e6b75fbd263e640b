"""Generate: the LLM answer (or the extractive fallback when providers fail), streamed as provisional
pieces to chat.deltas while it is written, for the channels that show them (``llm_stream_channels``);
the full turn goes on to validate as before."""

from __future__ import annotations

import time

from opentelemetry.trace import Span

from processors.records import ChatTurn
from streams import metrics
from streams.codec import Codec
from streams.deltas import TurnDeltas
from streams.message import InboundMessage, OutboundRecord
from streams.stage import Stage


class GenerateStage(Stage):
    name = "generate"
    input_type = ChatTurn
    producer = None

    async def start(self, codec: Codec) -> None:
        from processors.generation.generator import build_generator

        self.generator = build_generator(self.settings)
        providers = getattr(self.generator.provider, "providers", [])  # a FailoverProvider's chain
        metrics.register_circuit_gauge({p.name: p.breaker for p in providers if hasattr(p, "breaker")})

    async def stop(self) -> None:
        await self.generator.aclose()  # the providers' HTTP connection pools

    async def process(self, turn: ChatTurn, msg: InboundMessage, span: Span) -> list[OutboundRecord]:
        started = time.perf_counter()
        deltas = None
        if self.producer is not None and turn.request.channel in self.settings.llm_stream_channels:
            # only where an edge shows them: pieces nobody reads would still be redacted, encoded and
            # produced (the answer streams from the provider either way, for the turn's deadlines)
            deltas = TurnDeltas(
                producer=self.producer,
                codec=self.codec,
                topic=self.topics.deltas,
                request=turn.request,
                allowed=[f"{p.title}\n{p.text}" for p in turn.passages],  # as the validator allows them
                holdback_chars=self.settings.llm_stream_holdback_chars,
                interval_s=self.settings.llm_stream_delta_interval_ms / 1000,
                span=span,
            )
        turn = await self.generator.generate(turn, on_delta=deltas.on_delta if deltas else None)
        if deltas is not None:
            await deltas.finish()
            if deltas.first_shown_ms is not None:
                span.set_attribute("gen_ai.response.time_to_first_token", deltas.first_shown_ms / 1000)
                metrics.time_to_first_token(deltas.first_shown_ms, turn.provider or "none")
            span.set_attribute("chatstream.generation.deltas", deltas.seq)
        span.set_attributes({
            "gen_ai.request.model": turn.model,
            "chatstream.generation.provider": turn.provider,
            "chatstream.generation.degraded": turn.degraded,
        })
        metrics.llm_call(turn.provider or "none", "degraded" if turn.degraded else "ok")
        if turn.generation_error:
            span.add_event("generation degraded", {"error": turn.generation_error})
        turn.stage_ms[self.name] = int((time.perf_counter() - started) * 1000)
        return [OutboundRecord(self.topics.generated, turn.request.session_id, turn)]
