"""In-memory stand-ins for the vector store and the embedder, for unit tests without services."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from processors.passage_units import UnitVectors, stored_units
from processors.records import Passage
from processors.vectorstore import Chunk, StoredChunk, check_tenant


class HashEmbedder:
    """Bag-of-words vectors hashed into 64 dims: same words, same direction."""

    dimension = 64

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: Exception | None = None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if self.fail:
            raise self.fail
        self.calls.append(list(texts))
        out = []
        for text in texts:
            v = [0.0] * self.dimension
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                v[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            out.append([x / norm for x in v])
        return out

    async def close(self) -> None:
        pass


class MemoryStore:
    """A VectorStore keeping chunks in dicts; search is a dot product blended with word overlap."""

    def __init__(self) -> None:
        self.tenants: dict[str, dict[str, tuple[Chunk, list[float]]]] = {}
        self.upserts = 0
        self.fail: Exception | None = None
        self.searches: list[tuple[str, str, int, float]] = []
        self.models: dict[str, str] = {}
        self.unit_reads: list[list[str]] = []

    async def ensure_collection(self, tenant: str) -> None:
        self.tenants.setdefault(check_tenant(tenant), {})

    async def upsert(self, chunks: Sequence[Chunk], vectors, *, tenant: str) -> None:
        assert len(chunks) == len(vectors)
        for c, v in zip(chunks, vectors):
            self.tenants[tenant][c.chunk_id] = (c, list(v))
            self.upserts += 1

    async def hybrid_search(self, query: str, vector: list[float], *, tenant: str, k: int, alpha: float):
        self.searches.append((query, tenant, k, alpha))
        if self.fail:
            raise self.fail
        if tenant not in self.tenants:
            raise LookupError(f"tenant {tenant} not found")
        words = set(re.findall(r"[a-z0-9]+", query.lower()))
        scored = []
        for chunk, v in self.tenants[tenant].values():
            dense = sum(a * b for a, b in zip(vector, v))
            sparse = len(words & set(re.findall(r"[a-z0-9]+", chunk.text.lower()))) / (len(words) or 1)
            scored.append((alpha * dense + (1 - alpha) * sparse, chunk))
        scored.sort(key=lambda item: -item[0])
        return [Passage(c.doc_id, c.chunk_id, c.title, c.url or c.source, c.text, s) for s, c in scored[:k]]

    async def stored_chunks(self, tenant: str) -> dict[str, StoredChunk]:
        return {cid: StoredChunk(cid, c.doc_id, c.content_hash, c.units_key) for cid, (c, _) in self.tenants.get(tenant, {}).items()}

    async def unit_vectors(self, chunk_ids: Sequence[str], *, tenant: str) -> dict[str, UnitVectors]:
        self.unit_reads.append(list(chunk_ids))
        chunks = self.tenants.get(tenant, {})
        found = {cid: stored_units(chunks[cid][0].units_key, chunks[cid][0].units) for cid in chunk_ids if cid in chunks}
        return {cid: units for cid, units in found.items() if units is not None}

    async def delete_chunks(self, chunk_ids: Sequence[str], *, tenant: str) -> int:
        n = 0
        for cid in chunk_ids:
            n += self.tenants[tenant].pop(cid, None) is not None
        return n

    async def embedding_model(self, tenant: str) -> str | None:
        return self.models.get(tenant)

    async def record_embedding_model(self, tenant: str, model: str) -> None:
        self.models.setdefault(tenant, model)

    async def drop_tenant(self, tenant: str) -> None:
        self.tenants.pop(tenant, None)
        self.models.pop(tenant, None)

    async def close(self) -> None:
        pass
