"""Retrieve: hybrid search in the knowledge base (Weaviate) for the turn's question."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from processors.records import ChatRequest, ChatTurn
from streams import metrics
from streams.codec import Codec
from streams.message import InboundMessage, OutboundRecord
from streams.stage import Stage

log = logging.getLogger(__name__)


@dataclass
class RetrievalParts:
    """What retrieval holds open: the store, the query embedder, the relevance embedder, the retriever."""

    store: Any
    embedder: Any
    relevance_embedder: Any
    retriever: Any

    async def close(self) -> None:
        await self.store.close()
        await self.embedder.close()
        if self.relevance_embedder is not None:
            await self.relevance_embedder.close()


async def open_retrieval(settings: Any) -> RetrievalParts:
    """Build and warm up retrieval as a worker runs it (the stage and the bench's baseline share this)."""
    from processors.embeddings import build_embedder
    from processors.kb_cache import share_query_vectors
    from processors.retrieval import build_retriever
    from processors.vectorstore import build_store
    from streams.stages.clients import redis_client

    store = build_store(settings)
    embedder = build_embedder(settings)
    redis = redis_client(settings)  # query vectors and (optionally) results shared by workers
    if settings.embedding_shared_cache_ttl_s > 0:
        embedder = share_query_vectors(embedder, redis, ttl_s=settings.embedding_shared_cache_ttl_s)
    # answerability measures passage sentences with a second embedder (processors.relevance)
    relevance_embedder = build_embedder(settings) if settings.answerability_min_relevance > 0 else None
    retriever = build_retriever(settings, store, embedder, relevance_embedder, redis=redis)
    for part in (embedder, relevance_embedder, store):
        warm_up = getattr(part, "warm_up", None)
        if warm_up is not None:
            await warm_up()  # load the models and the client library now, not on the first user's turn
    if settings.answerability_min_relevance > 0:
        from processors.spelling import english_words

        await asyncio.to_thread(english_words)  # the spelling dictionary (~0.5 s), not on the first turn
    await retriever.warm_up(settings.tenant)  # connect, check the model, measure: before the first turn
    return RetrievalParts(store, embedder, relevance_embedder, retriever)


class RetrieveStage(Stage):
    name = "retrieve"
    input_type = ChatTurn

    async def start(self, codec: Codec) -> None:
        self.parts = await open_retrieval(self.settings)
        self.retriever = self.parts.retriever

    async def stop(self) -> None:
        await self.parts.close()

    def prefetch(self, request: ChatRequest) -> None:
        """A turn of this worker was admitted upstream (enrich): start embedding its question now, so
        the embedding overlaps enrich's Redis work and the hop to this stage instead of following them
        (``Retriever.prefetch``: stand-alone questions only, nothing the turn will not use)."""
        if len(request.text) > self.settings.max_text_chars:
            return  # enrich rejects it
        try:
            self.retriever.prefetch(request.text)
        except Exception:  # noqa: BLE001 - a head start, never a reason to fail the turn upstream
            log.warning("could not start embedding a question ahead of retrieval", exc_info=True)

    async def process(self, turn: ChatTurn, msg: InboundMessage, span: Span) -> list[OutboundRecord]:
        started = time.perf_counter()
        turn, relevance = await self.retriever.retrieve_scored(turn)  # absolute, unlike the normalised score
        span.set_attributes({
            "chatstream.retrieval.ok": turn.retrieval_ok,
            "chatstream.retrieval.passages": len(turn.passages),
            "chatstream.retrieval.answerable": turn.answerable,
        })
        if relevance is not None:
            metrics.retrieval_score(relevance)
        if not turn.retrieval_ok:
            span.add_event("retrieval failed", {"error": turn.retrieval_error or ""})
        turn.stage_ms[self.name] = int((time.perf_counter() - started) * 1000)
        return [OutboundRecord(self.topics.retrieved, turn.request.session_id, turn)]
