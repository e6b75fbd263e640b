"""A worker running enrich and retrieve starts a question's embedding when enrich admits the turn
(issue 14: the embedding was the largest step before the LLM call), and only for admitted turns."""

from __future__ import annotations

from opentelemetry.trace import INVALID_SPAN

from processors.embeddings import CachedEmbedder
from processors.records import ChatRequest, ChatTurn, now_ms
from processors.retrieval import Retriever
from processors.session import Admission, ReplyClaim
from streams.config import Settings
from streams.message import InboundMessage
from streams.runtime.worker import StageWorker
from streams.stages.enrich import EnrichStage
from streams.stages.retrieve import RetrieveStage


class _Sessions:
    """The SessionStore calls enrich makes: the admission (duplicates, rate tokens, the session), the reply claim."""

    def __init__(self, replied: set[str], limited: set[str]) -> None:
        self.replied, self.limited = replied, limited

    async def admit(self, request: ChatRequest) -> Admission:
        """The one admission round trip: a repeat, a rate-limited user, or the turn with its session."""
        if request.message_id in self.replied:
            return Admission("replied")
        if request.user_id in self.limited:
            return Admission("rate_limited", retry_after_s=3.0)
        return Admission("admitted", ChatTurn(request=request))

    async def claim_reply(self, message_id: str, ttl_ms: int) -> ReplyClaim:
        return ReplyClaim(message_id, "test-owner", 1, "ok")


class _Ready:
    async def ready(self) -> None:
        return None


class _Embedder:
    dimension = 2

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [[1.0, 0.0] for _ in texts]

    async def close(self) -> None:
        pass


def request(mid: str, text: str, user: str = "u1") -> tuple[ChatRequest, InboundMessage]:
    req = ChatRequest(mid, "s1", user, "web", text, now_ms())
    return req, InboundMessage("chat.inbound", 0, 0, b"s1", b"")


async def test_enrich_hands_admitted_questions_to_the_workers_retrieve_stage() -> None:
    settings = Settings()
    enrich, retrieve = EnrichStage(settings), RetrieveStage(settings)
    StageWorker(settings, [enrich, retrieve])._connect_prefetch()
    assert enrich.on_admitted == retrieve.prefetch

    inner = _Embedder()
    retrieve.retriever = Retriever(object(), CachedEmbedder(inner), top_k=2, alpha=0.5)  # type: ignore[arg-type]
    enrich.sessions = _Sessions(replied={"dup"}, limited={"flooder"})  # type: ignore[assignment]
    enrich.markers = _Ready()  # type: ignore[assignment]

    outputs = await enrich.process(*request("m1", "How do I export my data?"), INVALID_SPAN)
    assert [o.topic for o in outputs] == [settings.topics.enriched]
    for mid, text, user in [("m2", "How do I delete my account?", "flooder"),  # rate limited
                            ("dup", "How do I change my plan?", "u1"),  # answered already
                            ("m3", "   ", "u1")]:  # rejected (empty)
        await enrich.process(*request(mid, text, user), INVALID_SPAN)
    embedder = retrieve.retriever.embedder
    await embedder.embed(["How do I export my data?"])  # what the retrieve stage asks for later
    assert inner.calls == [["How do I export my data?"]]  # the admitted turn only, embedded once

    too_long = "How do I export? " * settings.max_text_chars
    retrieve.prefetch(ChatRequest("m4", "s1", "u1", "web", too_long, now_ms()))  # enrich rejects it: no work
    assert embedder.prefetched == 1  # type: ignore[attr-defined]
    await embedder.close()


def test_stages_in_other_processes_are_not_connected() -> None:
    settings = Settings()
    enrich = EnrichStage(settings)
    StageWorker(settings, [enrich])._connect_prefetch()
    assert enrich.on_admitted is None
