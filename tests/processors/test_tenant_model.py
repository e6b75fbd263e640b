"""The model guard: a tenant dropped and re-ingested with another model is refused at once, not after its cache expires."""

from __future__ import annotations

import pytest
from fakes_retrieval import HashEmbedder, MemoryStore

from processors.ingest import ingest
from processors.tenant_model import EmbeddingModelMismatch, TenantModelGuard, model_id


class ApiModel(HashEmbedder):
    name, model = "openai", "text-embedding-3-small"


class Generations:
    """What Redis holds for the guard: the tenant's generation, bumped by every ingest (or unreadable)."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.down = False
        self.reads = 0

    async def bump(self, tenant: str) -> None:
        self.values[tenant] = self.values.get(tenant, 0) + 1

    async def __call__(self, tenant: str) -> str | None:
        self.reads += 1
        return None if self.down else str(self.values.get(tenant, 0))


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.model_reads = 0

    async def embedding_model(self, tenant: str) -> str | None:
        self.model_reads += 1
        return await super().embedding_model(tenant)


@pytest.fixture
def kb(tmp_path):
    (tmp_path / "a.md").write_text("# Password reset\n\nClick forgot password.")
    return tmp_path


async def test_a_reingest_with_another_model_is_refused_at_once(kb):
    store, generations = CountingStore(), Generations()
    local = HashEmbedder()
    await ingest(kb, store, local, "kb", on_change=lambda: generations.bump("kb"))
    store.model_reads = 0  # the ingest's own check
    guard = TenantModelGuard(store, model_id(local), ttl_s=30.0, generation=generations)
    unaware = TenantModelGuard(store, model_id(local), ttl_s=30.0)  # the cache as it was: time only
    await guard.check("kb")
    await unaware.check("kb")
    await guard.check("kb")
    assert store.model_reads == 2  # one read per guard: cached while the generation stays

    await store.drop_tenant("kb")
    await ingest(kb, store, ApiModel(), "kb", on_change=lambda: generations.bump("kb"))
    assert store.models == {"kb": "openai:text-embedding-3-small"}

    with pytest.raises(EmbeddingModelMismatch, match="'openai:text-embedding-3-small' but this embedder is 'HashEmbedder'"):
        await guard.check("kb")
    await unaware.check("kb")  # without the generation the old model is trusted for up to 30 s


async def test_an_ingest_that_changes_nothing_keeps_the_cached_model(kb):
    store, generations = CountingStore(), Generations()
    await ingest(kb, store, HashEmbedder(), "kb", on_change=lambda: generations.bump("kb"))
    guard = TenantModelGuard(store, "HashEmbedder", generation=generations)
    await guard.check("kb")
    await ingest(kb, store, HashEmbedder(), "kb", on_change=lambda: generations.bump("kb"))  # nothing changed: no bump
    store.model_reads = 0
    await guard.check("kb")
    assert store.model_reads == 0 and generations.reads == 2


async def test_an_unreadable_generation_falls_back_to_the_time_limit(kb):
    store, generations = CountingStore(), Generations()
    await ingest(kb, store, HashEmbedder(), "kb", on_change=lambda: generations.bump("kb"))
    guard = TenantModelGuard(store, "HashEmbedder", ttl_s=0.0, generation=generations)
    await guard.check("kb")
    generations.down = True
    await store.drop_tenant("kb")
    await ingest(kb, store, ApiModel(), "kb", on_change=lambda: generations.bump("kb"))
    store.model_reads = 0
    with pytest.raises(EmbeddingModelMismatch):
        await guard.check("kb")  # ttl 0: read again although the generation is unknown
    assert store.model_reads == 1
