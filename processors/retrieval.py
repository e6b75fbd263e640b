"""The retrieve stage's logic: build a search query from the turn, embed it, hybrid-search the tenant.

Failure policy: when the embedder or Weaviate fails (down, timing out, unknown tenant) the turn is
*not* failed or retried here. It goes on with ``retrieval_ok=False``, the error and no passages, so
generation can tell the user it could not look things up (or escalate) within seconds, instead of
the user waiting out an outage in silence. Retrying would hold the turn and its session behind it;
dead-lettering would lose a good turn. The outage is visible in the turn, the span and the reply.

During an outage every lookup would wait out the timeout first, so a small circuit breaker (one per
tenant) skips the store after ``breaker_failures`` consecutive failures: for ``breaker_reset_s``
turns go on at once with ``retrieval_ok=False``, then one turn probes the store and a success closes
the breaker. The timeout bounds each call to the store (and to a remote embedder) only: at most
``max_concurrent`` searches are in flight, the others wait for a slot outside the timeout (as does a
local model's CPU queue), since a queue on a busy machine is not an outage; a turn that was waiting
when the breaker opened goes on at once.

Answerability: each passage's absolute relevance is measured (``processors.relevance``); when the
turn's answer score is below ``min_relevance`` it is marked ``answerable=False``, and the later
stages decline honestly instead of answering from unrelated passages.

Query: the latest user text is searched on its own when it stands alone, so an old topic does not
pull in stale passages. A short follow-up ("and how much does it cost?") names nothing to search for,
so the previous user message (from the history, or else the newest user line of the rolling
summary) is put in front of it.
"""

from __future__ import annotations

import asyncio
import logging
import dataclasses

from opentelemetry import trace
from opentelemetry.trace import Status as SpanStatus
from opentelemetry.trace import StatusCode

from processors.circuit import CircuitBreaker, CircuitState
from processors.condense import condensed_question, is_follow_up, searchable_text  # noqa: F401 - is_follow_up re-exported
from processors.embeddings import Embedder, blocking_entry
from processors.kb_cache import RetrievalCache, TenantGenerations, is_uncased
from processors.records import ChatTurn
from processors.relevance import RelevanceMeter, is_covered, turn_score
from processors.spans import active_span
from processors.spelling import corrected, passage_vocabulary
from processors.tenant_model import TenantModelGuard, model_id
from processors.vectorstore import VectorStore

tracer = trace.get_tracer("chatstream.retrieval")
log = logging.getLogger(__name__)


class StoreJudgedDown(Exception):
    """The tenant's breaker opened while this lookup waited for a slot."""


def latest_text(turn: ChatTurn) -> str:
    """The turn's own question, searchable."""
    return searchable_text(turn.request.text)


def _previous_user_text(turn: ChatTurn) -> str:
    for h in reversed(turn.history):
        if h.role == "user" and h.text.strip():
            return h.text
    for line in reversed(turn.summary.splitlines()):
        if line.startswith("user: "):
            return line[len("user: ") :]
    return ""


def build_query(turn: ChatTurn) -> str:
    """The text searched (by BM25) and embedded (for the vector half) for this turn
    (``processors.condense``: the latest text, after the previous user message for a follow-up)."""
    return condensed_question(turn.request.text, _previous_user_text(turn))


class Retriever:
    """Finds the passages a turn's answer should be grounded in."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        *,
        top_k: int,
        alpha: float,
        timeout_s: float = 5.0,
        breaker_failures: int = 2,
        breaker_reset_s: float = 2.0,
        min_relevance: float = 0.0,
        relevance_embedder: Embedder | None = None,
        cache: RetrievalCache | None = None,
        model_guard: TenantModelGuard | None = None,
        max_concurrent: int = 8,
    ) -> None:
        if top_k < 1 or not 0.0 <= alpha <= 1.0 or timeout_s <= 0:
            raise ValueError("top_k must be >= 1, alpha within [0, 1], timeout_s > 0")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        if breaker_failures < 1 or breaker_reset_s < 0:
            raise ValueError("breaker_failures must be >= 1 and breaker_reset_s >= 0")
        self.store = store
        self.embedder = embedder
        self.top_k = top_k
        self.alpha = alpha
        self.timeout_s = timeout_s
        self._breaker_failures = breaker_failures
        self._breaker_reset_s = breaker_reset_s
        self.min_relevance = min_relevance
        # its own embedder (queue) when given: a cold start embeds a help center's sentences once, and
        # the turns' query embeddings must not wait behind that inside the lookup timeout
        self.meter = RelevanceMeter(relevance_embedder or embedder, stored=getattr(store, "unit_vectors", None))
        self._breakers: dict[str, CircuitBreaker] = {}
        self._last_error: dict[str, str] = {}
        self.cache = cache
        self.model_guard = model_guard
        self._model = model_id(embedder)
        self._uncased = is_uncased(self._model)
        # a local model's wait is this machine's CPU queue: under overload it grows with the turns in
        # flight, and counting it against the store's timeout opened the breaker on a healthy store
        # (529 of 1,500 turns degraded at overload, measured); only a remote embedder gets the timeout
        self._local_embedder = blocking_entry(embedder) is not None
        # searches in flight to the store: the rest queue here, outside the timeout. Sixty-four at
        # once each took the whole queue's time on a busy 2-core machine and timed out together
        self.max_concurrent = max_concurrent
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    def breaker(self, tenant: str) -> CircuitBreaker:
        """Per tenant, so one misconfigured knowledge base cannot switch retrieval off for the others."""
        found = self._breakers.get(tenant)
        if found is None:
            found = self._breakers[tenant] = CircuitBreaker(
                failure_threshold=self._breaker_failures, reset_s=self._breaker_reset_s
            )
        return found

    async def retrieve(self, turn: ChatTurn) -> ChatTurn:
        """The turn with ``passages`` (best first), or with ``retrieval_ok=False`` when lookup failed."""
        turn, _score = await self.retrieve_scored(turn)
        return turn

    async def retrieve_scored(self, turn: ChatTurn) -> tuple[ChatTurn, float | None]:
        """``retrieve`` and the turn's answer score (``relevance.turn_score``; None when nothing was
        measured or the lookup failed), computed once: the stage's metric reads it from here instead
        of scoring the passages again."""
        tenant = turn.request.tenant or "default"
        query = build_query(turn)
        with active_span(tracer, "retrieval retrieve", attributes={
            "chatstream.tenant": tenant, "chatstream.retrieval.follow_up": query != latest_text(turn),
        }) as span:
            breaker = self.breaker(tenant)
            permit = breaker.allow()
            if not permit:
                return _skipped(turn, span, self._last_error.get(tenant, "")), None
            try:
                vector, passages = await self._search(query, tenant)
            except asyncio.CancelledError:
                breaker.release(permit)
                raise
            except StoreJudgedDown as exc:
                breaker.release(permit)  # no verdict of its own: the failures that opened the breaker are counted
                return _skipped(turn, span, str(exc)), None
            except Exception as exc:  # noqa: BLE001 - any lookup failure degrades the turn, see module doc
                if isinstance(exc, asyncio.TimeoutError):
                    error = f"retrieval timed out after {self.timeout_s:g}s"
                else:
                    error = f"{type(exc).__name__}: {exc}"[:500]
                self._last_error[tenant] = error
                breaker.record_failure()
                if isinstance(exc, asyncio.TimeoutError):
                    # the exception event without a stack trace: a timeout's trace is the cancelled
                    # call's (deep in the client library), says nothing the message does not, and
                    # formatting it cost ~1.5 % of the worker's time while an overloaded store timed out
                    span.add_event("exception", {"exception.type": "TimeoutError", "exception.message": error})
                else:
                    span.record_exception(exc)
                span.set_status(SpanStatus(StatusCode.ERROR, error))
                span.set_attribute("chatstream.retrieval.ok", False)
                return dataclasses.replace(turn, passages=[], retrieval_ok=False, retrieval_error=error), None
            breaker.record_success()
            latest = latest_text(turn)
            passages = await self._measured(vector, passages, query, latest, tenant)
            found: dict[str, object] = {"chatstream.retrieval.ok": True, "chatstream.retrieval.hits": len(passages)}
            if passages:
                found["chatstream.retrieval.top_doc"] = passages[0].doc_id
                found["chatstream.retrieval.top_score"] = passages[0].score
            relevance = turn_score(query, latest, passages)
            if relevance is not None:
                found["chatstream.retrieval.relevance"] = relevance
            # passages stay on the turn even when not covered: evaluation reads what was found
            answerable = is_covered(relevance, passages, self.min_relevance)
            found["chatstream.retrieval.answerable"] = answerable
            span.set_attributes(found)  # type: ignore[arg-type]  # one lock and one validation pass
        return dataclasses.replace(
            turn, passages=passages, retrieval_ok=True, retrieval_error=None, answerable=answerable
        ), relevance

    def prefetch(self, text: str) -> bool:
        """Start embedding the query of a turn whose user text is ``text`` before the turn gets here
        (the worker calls it when enrich admits the turn); True when started.

        Only for a question that stands alone: its query is exactly its own searchable text whatever
        the history says (``condensed_question``), so nothing is embedded that the turn will not use.
        A follow-up's query needs the previous message, which enrich is still loading. Only with an
        embedder that keeps what it computed (``CachedEmbedder.prefetch``). The tenant's model guard
        still runs before the vector reaches the store.
        """
        start = getattr(self.embedder, "prefetch", None)
        if start is None:
            return False
        query = searchable_text(text)
        if not query.strip() or is_follow_up(query):
            return False
        return bool(start(query))

    async def warm_up(self, tenant: str, question: str = "How do I get help with my account?") -> None:
        """One lookup before the first turn, so the first users do not pay for the store's connection,
        the tenant's model check and the relevance meter's first passages (1.0-1.3 s for the first
        turns of a fresh worker, measured, while the turns behind them queued). Outside the breaker and
        never raised: a knowledge base that is down at start is the turns' and the breaker's business."""
        try:
            vector, passages = await asyncio.wait_for(self._search(question, tenant), self.timeout_s)
            await self._measured(vector, passages, question, question, tenant)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - see docstring
            log.warning("retrieval warm-up for tenant %r failed (%s); the first turns will be slower", tenant, exc)

    async def _search(self, query: str, tenant: str):  # type: ignore[no-untyped-def]
        """The query's vector and the tenant's passages; each call to the store (and to a remote
        embedder) within ``timeout_s``, the local model's CPU queue outside it."""
        generation = key = passages = None
        async with asyncio.timeout(self.timeout_s):
            if self.model_guard is not None:
                await self.model_guard.check(tenant)  # never a query vector of one model against another's
            if self.cache is not None:
                key = self.cache.query_key(query, model=self._model, k=self.top_k, alpha=self.alpha, uncased=self._uncased)
                generation, passages = await self.cache.get(tenant, key)
        # on a cache hit too: relevance is measured against the query vector (the embedding caches make it cheap)
        vector = await self._query_vector(query)
        if passages is not None:
            return vector, passages
        async with self._store_slot():
            if self.breaker(tenant).state is CircuitState.OPEN:
                # judged down while this turn queued: go on without passages now, not after a timeout
                raise StoreJudgedDown(self._last_error.get(tenant, "the knowledge base is failing"))
            async with asyncio.timeout(self.timeout_s):
                passages = await self.store.hybrid_search(query, vector, tenant=tenant, k=self.top_k, alpha=self.alpha)
                if self.cache is not None and generation is not None:
                    await self.cache.put(tenant, generation, key, passages)
        return vector, passages

    def _store_slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:  # tests run a loop per test
            self._slots, self._slots_loop = asyncio.Semaphore(self.max_concurrent), loop
        return self._slots

    async def _query_vector(self, query: str) -> list[float]:
        if self._local_embedder:
            (vector,) = await self.embedder.embed([query])
        else:
            async with asyncio.timeout(self.timeout_s):
                (vector,) = await self.embedder.embed([query])
        return vector

    async def _measured(self, vector, passages, query: str, latest: str, tenant: str):  # type: ignore[no-untyped-def]
        """Passages with their absolute relevance; outside the lookup's timeout (local CPU, not the store).

        A passage's relevance is the best of its match with every reading of the question: the
        searched ``query``; for a follow-up (searched together with the previous message) its own
        ``latest`` text; and each of them as the passages spell it (``processors.spelling``: "pasword"
        read as "password"), since a typo pulls the embedding away from the meaning.

        A failure here leaves relevance unmeasured (None), which ``covers`` treats as covered: a
        measuring problem must not turn good answers into declines.
        """
        if self.min_relevance <= 0:
            return passages  # answerability off: no need to measure
        try:
            measured = await self.meter.measure(vector, passages, tenant=tenant)
            vocabulary = passage_vocabulary(f"{p.title} {p.text}" for p in measured if p.relevance is not None)
            texts = [query] if latest == query else [query, latest]
            readings = [t for t in dict.fromkeys(texts + [corrected(t, vocabulary) for t in texts]) if t != query]
            if readings:
                for other_vector in await self.embedder.embed(readings):
                    other = await self.meter.measure(other_vector, passages)
                    measured = [
                        p if a.relevance is None or p.relevance is None else dataclasses.replace(p, relevance=max(p.relevance, a.relevance))
                        for p, a in zip(measured, other)
                    ]
            return measured
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - see docstring
            log.warning("relevance measurement failed; the turn is treated as covered", exc_info=True)
            return passages


def _skipped(turn: ChatTurn, span, last_error: str) -> ChatTurn:  # type: ignore[no-untyped-def]
    """The turn without passages while the tenant's breaker is open (checked before the lookup, or
    found open after waiting for a slot), the failure that opened it in the error."""
    error = f"retrieval skipped while the knowledge base is failing ({last_error})"[:500]
    span.set_attributes({"chatstream.retrieval.ok": False, "chatstream.retrieval.breaker_open": True})
    span.set_status(SpanStatus(StatusCode.ERROR, "breaker open"))
    return dataclasses.replace(turn, passages=[], retrieval_ok=False, retrieval_error=error)


def build_retriever(  # type: ignore[no-untyped-def]
    settings, store: VectorStore, embedder: Embedder, relevance_embedder: Embedder | None = None, *, redis=None
) -> Retriever:
    """The retriever configured from ``streams.config.Settings``; ``redis`` enables the result cache."""
    cache = None
    if redis is not None and settings.retrieval_cache_ttl_s > 0:
        cache = RetrievalCache(redis, ttl_s=settings.retrieval_cache_ttl_s)
    return Retriever(
        store,
        embedder,
        top_k=settings.retrieval_top_k,
        alpha=settings.retrieval_alpha,
        timeout_s=settings.retrieval_timeout_s,
        breaker_failures=settings.retrieval_breaker_failures,
        breaker_reset_s=settings.retrieval_breaker_reset_s,
        min_relevance=settings.answerability_min_relevance,
        relevance_embedder=relevance_embedder,
        cache=cache,
        max_concurrent=settings.retrieval_max_concurrent,
        # an ingest bumps the tenant's generation in Redis: a re-ingest with another model is refused at once
        model_guard=TenantModelGuard(store, model_id(embedder), generation=TenantGenerations(redis) if redis is not None else None),
    )
