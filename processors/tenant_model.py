"""Which embedding model made a tenant's vectors, and refusing to mix two models in one tenant.

Vectors of two models live in different spaces: comparing them ranks garbage without any error. So
the first ingest records the model for the tenant (beside its chunks, in the vector store), a later
ingest with another model is refused before anything is embedded, and the retriever refuses to
search a tenant with a query vector from another model. A tenant ingested before models were
recorded is claimed by its next ingest.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from processors.embeddings import Embedder, EmbeddingError
from processors.vectorstore import VectorStore


class EmbeddingModelMismatch(EmbeddingError):
    """A tenant's vectors come from one model and this embedder is another: searching or adding
    would compare vectors of two different spaces, which ranks garbage without any error."""

    def __init__(self, tenant: str, recorded: str, current: str) -> None:
        super().__init__(
            f"tenant {tenant!r} was embedded with {recorded!r} but this embedder is {current!r}; "
            f"use the same embedding settings, or ingest into a new tenant (or drop this one) to switch models"
        )
        self.tenant, self.recorded, self.current = tenant, recorded, current


def model_id(embedder: Embedder) -> str:
    """A name for the vector space an embedder produces; a tenant's vectors must all share it.

    Wrappers (caches) expose the embedder they wrap as ``inner`` and do not change the space.
    """
    inner = embedder
    while getattr(inner, "inner", None) is not None:
        inner = inner.inner  # type: ignore[attr-defined]
    name = getattr(inner, "name", type(inner).__name__)
    model = getattr(inner, "model", None)
    if name == "local-minilm":
        return "local:all-MiniLM-L6-v2-int8" + ("-dynamic" if getattr(inner, "int8_compute", False) else "")
    return f"{name}:{model}" if model else str(name)


async def check_embedding_model(store: VectorStore, tenant: str, model: str, *, record: bool = False) -> None:
    """Refuse a tenant whose vectors come from another model; with ``record``, claim an unclaimed one."""
    recorded = await store.embedding_model(tenant)
    if recorded is None:
        if record:
            await store.record_embedding_model(tenant, model)
        return
    if recorded != model:
        raise EmbeddingModelMismatch(tenant, recorded, model)


class TenantModelGuard:
    """The retriever's check, cached per tenant for ``ttl_s`` so it does not cost a store read per turn.

    A tenant dropped and re-ingested with another model must be refused at once, not after the
    cache expires. Every ingest bumps the tenant's generation (``processors.kb_cache``, the same
    number that invalidates cached search results; it is bumped after the model is recorded and
    before the first write), so with ``generation`` (tenant -> generation, None when it cannot be
    read) the cached model is only trusted while the generation is the one it was read under.
    When the generation cannot be read (Redis down) the cache falls back to ``ttl_s`` alone.
    """

    def __init__(
        self,
        store: VectorStore,
        model: str,
        *,
        ttl_s: float = 30.0,
        generation: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.ttl_s = ttl_s
        self.generation = generation
        self._known: dict[str, tuple[float, str | None, str | None]] = {}  # tenant -> (read at, generation, model)

    async def check(self, tenant: str) -> None:
        now = time.monotonic()
        generation = await self.generation(tenant) if self.generation is not None else None
        known = self._known.get(tenant)
        stale = (
            known is None
            or now - known[0] > self.ttl_s
            or (generation is not None and generation != known[1])  # an ingest since the model was read
        )
        if stale:
            recorded = await self.store.embedding_model(tenant)
            known = self._known[tenant] = (now, generation, recorded)
        if known[2] is not None and known[2] != self.model:
            raise EmbeddingModelMismatch(tenant, known[2], self.model)
