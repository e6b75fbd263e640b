"""Text embeddings for retrieval and ingestion: the ``Embedder`` interface and its providers.

The local ONNX MiniLM model (``processors.minilm``) is the default because nothing here may download
from a model hub; ``OpenAIEmbedder`` serves any OpenAI-compatible ``/v1/embeddings`` when configured.
``CachedEmbedder`` keeps recent query vectors in front of either.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from typing import Callable, Protocol, runtime_checkable

from opentelemetry import trace

from processors.backoff import RetryDeadlineExceeded, retry_transient
from processors.embedding_errors import EmbeddingError, EmbeddingUnavailable
from processors.secrets import plain_secret as secret
from processors.spans import active_span

tracer = trace.get_tracer("chatstream.embeddings")
log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors; the retriever and the ingester depend on nothing more."""

    dimension: int

    async def embed(self, texts: list[str]) -> list[list[float]]: ...

    async def close(self) -> None: ...


# --- OpenAI-compatible API -----------------------------------------------------------------------

KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


class OpenAIEmbedder:
    """Embeddings from ``/v1/embeddings`` (OpenAI, Azure, vLLM, Ollama, the scripted dev server).

    ``dimension`` is taken from the model name when known, else learnt from the first response.
    Rate limits (429, honouring Retry-After), 5xx, timeouts and connection failures are retried
    with the project's one retry vocabulary (``processors.backoff.retry_transient``: full jitter up
    to ``retry_deadline_s``), not the SDK's own loop; any other error (400, 401, 404) fails at once.
    A query's wait is further bounded by the retriever's timeout; an ingest waits the whole deadline.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        model: str,
        *,
        dimension: int | None = None,
        max_batch: int = 256,
        timeout_s: float = 20.0,
        retry_deadline_s: float = 20.0,
        retry_base_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        import openai

        self.model = model
        self.dimension = dimension or KNOWN_DIMENSIONS.get(model, 0)
        self.max_batch = max_batch
        self.retry_deadline_s, self.retry_base_s, self.retry_max_s = retry_deadline_s, retry_base_s, retry_max_s
        self.retries = 0  # transient failures retried so far, and the last wait (figures for benches and tests)
        self.last_retry_delay_s: float | None = None
        # the SDK refuses to start without a key; local OpenAI-compatible servers ignore it.
        # max_retries=0: retries are ours (retry_transient), so there is one retry loop, not two nested
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout_s, max_retries=0)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not a string")
        if not texts:
            return []
        out: list[list[float]] = []
        with active_span(tracer, "embeddings embed", attributes={
            "chatstream.embedding.provider": self.name, "chatstream.embedding.model": self.model,
            "chatstream.embedding.texts": len(texts),
        }) as span:
            for start in range(0, len(texts), self.max_batch):
                chunk = [t if t.strip() else " " for t in texts[start : start + self.max_batch]]
                response = await self._create(chunk, span)
                rows = sorted(response.data, key=lambda d: d.index)
                if len(rows) != len(chunk):
                    raise EmbeddingError(f"embedding API returned {len(rows)} vectors for {len(chunk)} texts")
                out.extend(list(map(float, row.embedding)) for row in rows)
        if out and not self.dimension:
            self.dimension = len(out[0])
        return out

    async def _create(self, chunk: list[str], span):  # type: ignore[no-untyped-def]
        """One ``/v1/embeddings`` request, retried while the failure is transient."""

        async def attempt():  # type: ignore[no-untyped-def]
            try:
                return await self.client.embeddings.create(model=self.model, input=chunk)
            except Exception as exc:
                raise _api_error(exc) from exc

        def on_retry(attempt_number: int, exc: BaseException, delay: float) -> None:
            self.retries += 1
            self.last_retry_delay_s = delay
            span.add_event("embedding retry", {"attempt": attempt_number, "error": str(exc)[:200], "delay_s": delay})

        try:
            return await retry_transient(
                attempt, base_s=self.retry_base_s, max_s=self.retry_max_s, deadline_s=self.retry_deadline_s, on_retry=on_retry
            )
        except RetryDeadlineExceeded as exc:
            raise EmbeddingError(f"embedding API failed for {self.retry_deadline_s:g}s: {exc.__cause__}") from exc

    async def close(self) -> None:
        await self.client.close()


def _api_error(exc: Exception) -> EmbeddingError:
    """An SDK error as ours: ``EmbeddingUnavailable`` (transient) or a plain ``EmbeddingError``."""
    import openai

    from processors.generation.openai_provider import RETRYABLE_STATUSES, parse_retry_after

    if isinstance(exc, openai.APITimeoutError):
        return EmbeddingUnavailable(f"embedding API timed out: {exc}")
    if isinstance(exc, openai.APIConnectionError):
        return EmbeddingUnavailable(f"embedding API unreachable: {exc.__cause__ or exc}")
    if isinstance(exc, openai.APIStatusError):
        message = f"embedding API answered HTTP {exc.status_code}: {exc.message}"
        if exc.status_code in RETRYABLE_STATUSES:
            return EmbeddingUnavailable(message, retry_after=parse_retry_after(exc.response.headers), status=exc.status_code)
        return EmbeddingError(message)
    return EmbeddingError(f"embedding API failed: {exc!r}")


def blocking_entry(embedder: Embedder) -> Callable[[list[str]], object] | None:
    """The model's own blocking ``encode_blocking`` behind any wrappers, or None for a remote embedder.

    A local model's wait is this machine's CPU queue, not an outage: bulk ingestion calls it from its
    own threads, and the retriever keeps its lookup timeout for the store (and remote embedders) only.
    """
    inner = embedder
    while getattr(inner, "inner", None) is not None:
        inner = inner.inner  # type: ignore[attr-defined]
    return getattr(inner, "encode_blocking", None)


class EmbedderWrapper:
    """An embedder in front of another (``inner``): the dimension, warm-up and close are the inner one's.

    The caches (``CachedEmbedder``, ``processors.kb_cache.SharedEmbeddingCache``) only change ``embed``;
    ``processors.embed_batch`` follows ``inner`` to the model's blocking entry point.
    """

    inner: Embedder

    @property
    def dimension(self) -> int:  # type: ignore[override]
        return self.inner.dimension

    async def warm_up(self) -> None:
        warm = getattr(self.inner, "warm_up", None)
        if warm is not None:
            await warm()

    async def close(self) -> None:
        await self.inner.close()


class CachedEmbedder(EmbedderWrapper):
    """An LRU cache of vectors by exact text in front of another embedder.

    Help-center traffic repeats itself ("how do I reset my password?"), and a cached query costs
    nothing, while a local embedding costs a few milliseconds of the one CPU-bound step on the turn's
    path (and an API embedding costs money). Duplicates inside one call are embedded once, and so is a
    text asked for while another call is embedding it: the later call waits for that result.

    ``prefetch`` starts a text's embedding in the background, so that the call that needs it later
    finds it done or under way (the worker embeds an admitted question while the turn still travels
    to the retrieve stage). At most ``max_prefetching`` run at once; beyond that a prefetch is
    skipped, so a burst of turns never queues speculative work ahead of the embeddings being waited for.
    """

    def __init__(self, inner: Embedder, max_entries: int = 4096, *, max_prefetching: int = 8) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.inner = inner
        self.max_entries = max_entries
        self.max_prefetching = max_prefetching
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._embedding: dict[str, asyncio.Future[list[float]]] = {}  # texts some call is embedding now
        self._prefetches: set[asyncio.Task[dict[str, list[float]]]] = set()
        self.hits = 0
        self.misses = 0
        self.prefetched = 0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not a string")
        found: dict[str, list[float]] = {}
        missing: list[str] = []
        under_way: dict[str, asyncio.Future[list[float]]] = {}
        for text in texts:
            if text in found or text in missing or text in under_way:
                continue
            vector = self._cache.get(text)
            if vector is not None:
                self._cache.move_to_end(text)
                found[text] = vector
            elif text in self._embedding:
                under_way[text] = self._embedding[text]
            else:
                missing.append(text)
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            found.update(await self._embed_missing(missing))
        for text, future in under_way.items():
            await asyncio.wait([future])  # never cancels the other call's work
            if future.cancelled():  # that call failed or was cancelled: embed it here after all
                found[text] = (await self._embed_missing([text]))[text]
            else:
                found[text] = future.result()
        return [list(found[text]) for text in texts]

    async def _embed_missing(self, missing: list[str]) -> dict[str, list[float]]:
        return await self._fill(missing, self._reserve(missing))

    def _reserve(self, missing: list[str]) -> dict[str, asyncio.Future[list[float]]]:
        """Mark the texts as under way (synchronously, so nobody starts them a second time)."""
        loop = asyncio.get_running_loop()
        futures = {text: loop.create_future() for text in missing}
        self._embedding.update(futures)
        return futures

    async def _fill(self, missing: list[str], futures: dict[str, asyncio.Future[list[float]]]) -> dict[str, list[float]]:
        try:
            vectors = await self.inner.embed(missing)
        except BaseException:
            self._abandon(futures)  # whoever waits for it embeds on its own (and sees its own error)
            raise
        out = {}
        for text, vector in zip(missing, vectors):
            out[text] = vector
            self._cache[text] = vector
            if self._embedding.get(text) is futures[text]:
                del self._embedding[text]
            futures[text].set_result(vector)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return out

    def prefetch(self, text: str) -> bool:
        """Start embedding ``text`` in the background (call it from the event loop); False when it is
        cached, already under way, or ``max_prefetching`` prefetches are running."""
        if text in self._cache or text in self._embedding or len(self._prefetches) >= self.max_prefetching:
            return False
        self.misses += 1
        futures = self._reserve([text])
        task = asyncio.ensure_future(self._fill([text], futures))
        self._prefetches.add(task)
        task.add_done_callback(functools.partial(self._prefetch_done, futures))
        self.prefetched += 1
        return True

    def _abandon(self, futures: dict[str, asyncio.Future[list[float]]]) -> None:
        """No vector will come for these texts: unmark them, and cancel each future still pending so a
        call waiting for it embeds the text on its own instead of waiting forever."""
        for text, future in futures.items():
            if self._embedding.get(text) is future:
                del self._embedding[text]
            if not future.done():
                future.cancel()

    def _prefetch_done(self, futures: dict[str, asyncio.Future[list[float]]], task: asyncio.Task[dict[str, list[float]]]) -> None:
        self._prefetches.discard(task)
        self._abandon(futures)  # a no-op after ``_fill`` settled them; needed when cancelled before it ran
        if not task.cancelled() and task.exception() is not None:
            # nobody awaits a prefetch: the call that needs the text embeds it again and sees the error
            log.debug("prefetching an embedding failed: %r", task.exception())

    async def close(self) -> None:
        for task in list(self._prefetches):
            task.cancel()
        await asyncio.gather(*self._prefetches, return_exceptions=True)
        await super().close()


def build_embedder(settings) -> Embedder:  # type: ignore[no-untyped-def]
    """The embedder chosen by ``CHATSTREAM_EMBEDDING_PROVIDER`` (``local`` or ``openai``)."""
    if settings.embedding_provider == "openai":
        api_key = secret(settings.embedding_api_key) or secret(settings.llm_api_key)
        base_url = settings.embedding_base_url or settings.llm_base_url
        embedder: Embedder = OpenAIEmbedder(
            base_url,
            api_key,
            settings.embedding_model,
            dimension=settings.embedding_dimension,
            timeout_s=settings.llm_timeout_s,
            retry_deadline_s=settings.embedding_retry_deadline_s,
        )
    else:
        from processors.minilm import LocalMiniLMEmbedder

        embedder = LocalMiniLMEmbedder(
            threads=settings.embedding_threads,
            max_batch=settings.embedding_batch_size,
            max_wait_ms=settings.embedding_batch_wait_ms,
            int8_compute=settings.embedding_int8_compute,
            cache_dir=settings.cache_dir / "models",
        )
    if settings.embedding_cache_size > 0:
        embedder = CachedEmbedder(embedder, settings.embedding_cache_size)
    return embedder


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    """``from processors.embeddings import LocalMiniLMEmbedder`` keeps working (it lives in minilm)."""
    if name in ("LocalMiniLMEmbedder", "locate_minilm_files"):
        from processors import minilm

        return getattr(minilm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
