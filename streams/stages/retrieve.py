"""Retrieve: hybrid search in the knowledge base (Weaviate) for the turn's question."""

from __future__ import annotations

import time

from opentelemetry.trace import Span

from processors.records import ChatTurn
from streams import metrics
from streams.codec import Codec
from streams.message import InboundMessage, OutboundRecord
from streams.stage import Stage


class RetrieveStage(Stage):
    name = "retrieve"
    input_type = ChatTurn

    @property
    def source(self) -> str:
        return self.topics.enriched

    async def start(self, codec: Codec) -> None:
        from processors.embeddings import build_embedder
        from processors.retrieval import build_retriever
        from processors.vectorstore import build_store

        from processors.kb_cache import share_query_vectors
        from streams.stages.clients import redis_client

        self.store = build_store(self.settings)
        self.embedder = build_embedder(self.settings)
        redis = redis_client(self.settings)  # query vectors and (optionally) results shared by workers
        if self.settings.embedding_shared_cache_ttl_s > 0:
            self.embedder = share_query_vectors(self.embedder, redis, ttl_s=self.settings.embedding_shared_cache_ttl_s)
        self.retriever = build_retriever(self.settings, self.store, self.embedder, redis=redis)
        warm_up = getattr(self.embedder, "warm_up", None)
        if warm_up is not None:
            await warm_up()  # load the model now, not on the first user's turn

    async def stop(self) -> None:
        await self.store.close()
        await self.embedder.close()

    async def process(self, turn: ChatTurn, msg: InboundMessage, span: Span) -> list[OutboundRecord]:
        started = time.perf_counter()
        turn = await self.retriever.retrieve(turn)
        span.set_attribute("chatstream.retrieval.ok", turn.retrieval_ok)
        span.set_attribute("chatstream.retrieval.passages", len(turn.passages))
        if turn.passages:
            metrics.retrieval_score(turn.passages[0].score)
        if not turn.retrieval_ok:
            span.add_event("retrieval failed", {"error": turn.retrieval_error or ""})
        turn.stage_ms["retrieve"] = int((time.perf_counter() - started) * 1000)
        return [OutboundRecord(self.topics.retrieved, turn.request.session_id, turn)]
