"""Repeated questions are cheap: query vectors and search results shared by workers through Redis.

Support traffic asks the same few hundred questions all day. Embedding one costs 6-7 ms of CPU and
a hybrid search a few ms of Weaviate CPU, while a Redis round trip costs a fraction of a millisecond.

* ``SharedEmbeddingCache`` keeps query vectors keyed by the embedding model and the normalised text,
  so every worker (and every restart) reuses them. A model change changes the key: vectors of two
  models never meet. It sits behind the in-process LRU (``CachedEmbedder``) and before the model.
* ``RetrievalCache`` keeps a tenant's search results for a short time, keyed by the tenant, the
  tenant's *generation*, the model and the query. Ingest bumps the generation (before writing and
  again after), so a result computed before a re-ingest can never be served after it, and the key
  always names the tenant, so one tenant's passages can never be served to another.

Redis trouble never fails a turn: a cache that cannot be read is a miss, one that cannot be written
is skipped (the real work is done either way).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from collections.abc import Awaitable
from typing import Any

import numpy as np

from processors.circuit import CircuitBreaker
from processors.embeddings import CachedEmbedder, Embedder, EmbedderWrapper
from processors.records import Passage
from processors.tenant_model import model_id
from processors.vectorstore import check_tenant

log = logging.getLogger(__name__)

_PREFIX = "cs:kb"


def normalise_query(text: str, *, uncased: bool) -> str:
    """Collapse whitespace (and case, for an uncased model): texts that embed identically share a key."""
    text = " ".join(text.split())
    return text.casefold() if uncased else text


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


@dataclasses.dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class _CacheGuard:
    """Bounds every cache call (``timeout_s``) and skips Redis for ``reset_s`` after a failure:
    a Redis outage must cost a turn nothing, not a client's connect retries on every lookup."""

    def __init__(self, timeout_s: float = 0.25, reset_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self.breaker = CircuitBreaker(failure_threshold=1, reset_s=reset_s)

    async def run(self, op: Awaitable[Any], stats: CacheStats, what: str) -> tuple[bool, Any]:
        """(True, result), or (False, None) when skipped, failed or too slow."""
        permit = self.breaker.allow()
        if not permit:
            if asyncio.iscoroutine(op):
                op.close()
            return False, None
        try:
            result = await asyncio.wait_for(op, self.timeout_s)
        except asyncio.CancelledError:
            self.breaker.release(permit)
            raise
        except Exception as exc:  # noqa: BLE001 - any cache failure is a miss or a skipped write
            self.breaker.record_failure()
            stats.errors += 1
            log.debug("%s failed: %r", what, exc)
            return False, None
        self.breaker.record_success()
        return True, result


class SharedEmbeddingCache(EmbedderWrapper):
    """Query vectors in Redis (float32 bytes, ``ttl_s``), in front of another embedder."""

    def __init__(self, inner: Embedder, redis, model: str, *, ttl_s: float, uncased: bool, prefix: str = _PREFIX) -> None:  # type: ignore[no-untyped-def]
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.inner = inner
        self.redis = redis
        self.model = model
        self.ttl_ms = int(ttl_s * 1000)
        self.uncased = uncased
        self.prefix = prefix
        self.stats = CacheStats()
        self._guard = _CacheGuard()
        self._model_key = _digest(model)[:12]

    def key(self, text: str) -> str:
        return f"{self.prefix}:vec:{self._model_key}:{_digest(normalise_query(text, uncased=self.uncased))}"

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not a string")
        if not texts:
            return []
        keys = [self.key(t) for t in texts]
        ok, raw = await self._guard.run(self.redis.mget(keys), self.stats, "embedding cache read")
        if not ok:
            raw = [None] * len(texts)
        out: list[list[float] | None] = [
            np.frombuffer(r, dtype=np.float32).tolist() if r else None for r in raw
        ]
        missing = [i for i, v in enumerate(out) if v is None]
        self.stats.hits += len(texts) - len(missing)
        self.stats.misses += len(missing)
        if missing:
            vectors = await self.inner.embed([texts[i] for i in missing])
            pipe = self.redis.pipeline(transaction=False)
            for i, vector in zip(missing, vectors):
                pipe.set(keys[i], np.asarray(vector, dtype=np.float32).tobytes(), px=self.ttl_ms)
            await self._guard.run(pipe.execute(), self.stats, "embedding cache write")  # a bonus if it works
            for i, vector in zip(missing, vectors):
                out[i] = list(vector)
        return out  # type: ignore[return-value]



# one round trip: the tenant's generation and the result stored under it
_LOOKUP = """
local gen = redis.call('GET', KEYS[1]) or '0'
return {gen, redis.call('GET', ARGV[1] .. gen .. ':' .. ARGV[2])}
"""


class RetrievalCache:
    """A tenant's search results for ``ttl_s`` seconds; ``invalidate`` (ingest) makes all of them stale."""

    def __init__(self, redis, *, ttl_s: float, prefix: str = _PREFIX) -> None:  # type: ignore[no-untyped-def]
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self.stats = CacheStats()
        self._guard = _CacheGuard()
        self._lookup = redis.register_script(_LOOKUP)

    def _generation_key(self, tenant: str) -> str:
        return generation_key(tenant, self.prefix)

    def _result_prefix(self, tenant: str) -> str:
        return f"{self.prefix}:res:{{{check_tenant(tenant)}}}:"

    @staticmethod
    def query_key(query: str, *, model: str, k: int, alpha: float, uncased: bool) -> str:
        """Everything that decides the result besides the tenant and its generation."""
        return _digest(model, str(k), repr(alpha), normalise_query(query, uncased=uncased))

    async def get(self, tenant: str, query_key: str) -> tuple[str | None, list[Passage] | None]:
        """(generation, passages) — passages None on a miss; generation None when Redis failed."""
        ok, found = await self._guard.run(
            self._lookup(keys=[self._generation_key(tenant)], args=[self._result_prefix(tenant), query_key]),
            self.stats,
            "retrieval cache read",
        )
        if not ok:
            return None, None
        generation, raw = found
        generation = generation.decode() if isinstance(generation, bytes) else str(generation)
        if raw is None:
            self.stats.misses += 1
            return generation, None
        self.stats.hits += 1
        return generation, [Passage(**p) for p in json.loads(raw)]

    async def put(self, tenant: str, generation: str, query_key: str, passages: list[Passage]) -> None:
        """Store under the generation read *before* searching: a search that raced an ingest is
        stored under the old generation, which nobody reads any more."""
        value = json.dumps([dataclasses.asdict(p) for p in passages])
        write = self.redis.set(f"{self._result_prefix(tenant)}{generation}:{query_key}", value, px=self.ttl_ms)
        await self._guard.run(write, self.stats, "retrieval cache write")  # a bonus if it works

    async def invalidate(self, tenant: str) -> int:
        return await invalidate_tenant(self.redis, tenant, prefix=self.prefix)


class TenantGenerations:
    """A tenant's ingest generation as workers read it (``TenantModelGuard``): None when Redis cannot say.

    Bounded like every cache call (250 ms, skipped for 5 s after a failure), so Redis trouble costs
    a turn nothing; the guard then falls back to its time limit.
    """

    def __init__(self, redis, *, prefix: str = _PREFIX) -> None:  # type: ignore[no-untyped-def]
        self.redis = redis
        self.prefix = prefix
        self.stats = CacheStats()
        self._guard = _CacheGuard()

    async def __call__(self, tenant: str) -> str | None:
        ok, raw = await self._guard.run(self.redis.get(generation_key(tenant, self.prefix)), self.stats, "generation read")
        if not ok:
            return None
        return "0" if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)


def generation_key(tenant: str, prefix: str = _PREFIX) -> str:
    return f"{prefix}:gen:{{{check_tenant(tenant)}}}"


async def invalidate_tenant(redis, tenant: str, *, prefix: str = _PREFIX) -> int:  # type: ignore[no-untyped-def]
    """Make every cached search result of the tenant stale (ingest calls this); the new generation."""
    return int(await redis.incr(generation_key(tenant, prefix)))


def is_uncased(model: str) -> bool:
    """all-MiniLM-L6-v2 lowercases its input, so case never changes its vectors."""
    return model.startswith("local:")


def share_query_vectors(embedder: Embedder, redis, *, ttl_s: float) -> Embedder:  # type: ignore[no-untyped-def]
    """``embedder`` with the Redis cache between its in-process LRU (if any) and the model."""
    model = model_id(embedder)
    if isinstance(embedder, CachedEmbedder):
        shared = SharedEmbeddingCache(embedder.inner, redis, model, ttl_s=ttl_s, uncased=is_uncased(model))
        return CachedEmbedder(shared, embedder.max_entries)
    return SharedEmbeddingCache(embedder, redis, model, ttl_s=ttl_s, uncased=is_uncased(model))
