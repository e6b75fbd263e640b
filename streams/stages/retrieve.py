"""Retrieve: hybrid search in the knowledge base (Weaviate) for the turn's question."""

from __future__ import annotations

import time

from opentelemetry.trace import Span

from processors.records import ChatTurn
from processors.relevance import turn_score
from processors.retrieval import build_query
from streams import metrics
from streams.codec import Codec
from streams.message import InboundMessage, OutboundRecord
from streams.stage import Stage


class RetrieveStage(Stage):
    name = "retrieve"
    input_type = ChatTurn

    async def start(self, codec: Codec) -> None:
        from processors.embeddings import build_embedder
        from processors.retrieval import build_retriever
        from processors.vectorstore import build_store

        self.store = build_store(self.settings)
        self.embedder = build_embedder(self.settings)
        # answerability measures passage sentences with a second embedder (processors.relevance)
        self.relevance_embedder = build_embedder(self.settings) if self.settings.answerability_min_relevance > 0 else None
        self.retriever = build_retriever(self.settings, self.store, self.embedder, self.relevance_embedder)
        for embedder in (self.embedder, self.relevance_embedder):
            warm_up = getattr(embedder, "warm_up", None)
            if warm_up is not None:
                await warm_up()  # load the model now, not on the first user's turn

    async def stop(self) -> None:
        await self.store.close()
        await self.embedder.close()
        if self.relevance_embedder is not None:
            await self.relevance_embedder.close()

    async def process(self, turn: ChatTurn, msg: InboundMessage, span: Span) -> list[OutboundRecord]:
        started = time.perf_counter()
        turn = await self.retriever.retrieve(turn)
        span.set_attribute("chatstream.retrieval.ok", turn.retrieval_ok)
        span.set_attribute("chatstream.retrieval.passages", len(turn.passages))
        relevance = turn_score(build_query(turn), " ".join(turn.request.text.split()), turn.passages)  # absolute, unlike the normalised score
        if relevance is not None:
            metrics.retrieval_score(relevance)
        span.set_attribute("chatstream.retrieval.answerable", turn.answerable)
        if not turn.retrieval_ok:
            span.add_event("retrieval failed", {"error": turn.retrieval_error or ""})
        turn.stage_ms[self.name] = int((time.perf_counter() - started) * 1000)
        return [OutboundRecord(self.topics.retrieved, turn.request.session_id, turn)]
