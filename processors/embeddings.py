"""Text embeddings for retrieval and ingestion: the ``Embedder`` interface and its providers.

The local ONNX MiniLM model (``processors.minilm``) is the default because nothing here may download
from a model hub; ``OpenAIEmbedder`` serves any OpenAI-compatible ``/v1/embeddings`` when configured.
``CachedEmbedder`` keeps recent query vectors in front of either.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, runtime_checkable

from opentelemetry import trace

from processors.embedding_errors import EmbeddingError
from processors.secrets import plain_secret as secret

tracer = trace.get_tracer("chatstream.embeddings")


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
        max_retries: int = 2,
    ) -> None:
        import openai

        self.model = model
        self.dimension = dimension or KNOWN_DIMENSIONS.get(model, 0)
        self.max_batch = max_batch
        # the SDK refuses to start without a key; local OpenAI-compatible servers ignore it
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout_s, max_retries=max_retries
        )

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not a string")
        if not texts:
            return []
        out: list[list[float]] = []
        with tracer.start_as_current_span("embeddings embed") as span:
            span.set_attribute("chatstream.embedding.provider", self.name)
            span.set_attribute("chatstream.embedding.model", self.model)
            span.set_attribute("chatstream.embedding.texts", len(texts))
            for start in range(0, len(texts), self.max_batch):
                chunk = [t if t.strip() else " " for t in texts[start : start + self.max_batch]]
                try:
                    response = await self.client.embeddings.create(model=self.model, input=chunk)
                except Exception as exc:
                    raise EmbeddingError(f"embedding API failed: {exc!r}") from exc
                rows = sorted(response.data, key=lambda d: d.index)
                if len(rows) != len(chunk):
                    raise EmbeddingError(f"embedding API returned {len(rows)} vectors for {len(chunk)} texts")
                out.extend(list(map(float, row.embedding)) for row in rows)
        if out and not self.dimension:
            self.dimension = len(out[0])
        return out

    async def close(self) -> None:
        await self.client.close()


class CachedEmbedder:
    """An LRU cache of vectors by exact text in front of another embedder.

    Help-center traffic repeats itself ("how do I reset my password?"), and a cached query costs
    nothing, while a local embedding costs a few milliseconds of the one CPU-bound step on the turn's
    path (and an API embedding costs money). Duplicates inside one call are embedded once.
    """

    def __init__(self, inner: Embedder, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.inner = inner
        self.max_entries = max_entries
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def dimension(self) -> int:  # type: ignore[override]
        return self.inner.dimension

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not a string")
        found: dict[str, list[float]] = {}
        missing: list[str] = []
        for text in texts:
            if text in found or text in missing:
                continue
            vector = self._cache.get(text)
            if vector is None:
                missing.append(text)
            else:
                self._cache.move_to_end(text)
                found[text] = vector
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            for text, vector in zip(missing, await self.inner.embed(missing)):
                found[text] = vector
                self._cache[text] = vector
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return [list(found[text]) for text in texts]

    async def warm_up(self) -> None:
        warm = getattr(self.inner, "warm_up", None)
        if warm is not None:
            await warm()

    async def close(self) -> None:
        await self.inner.close()


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
        )
    else:
        from processors.minilm import LocalMiniLMEmbedder

        embedder = LocalMiniLMEmbedder(
            threads=settings.embedding_threads,
            max_batch=settings.embedding_batch_size,
            max_wait_ms=settings.embedding_batch_wait_ms,
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
