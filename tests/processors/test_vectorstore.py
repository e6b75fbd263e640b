"""The Weaviate store's HNSW ef: set at creation, applied to an existing collection, left alone when unset."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from processors.vectorstore import WeaviateStore, build_store, hnsw_ef
from streams.config import Settings


def test_ef_is_read_from_the_named_vector_or_the_legacy_index():
    named = SimpleNamespace(vector_config={"default": SimpleNamespace(vector_index_config=SimpleNamespace(ef=64))})
    legacy = SimpleNamespace(vector_config=None, vector_index_config=SimpleNamespace(ef=-1))
    assert hnsw_ef(named) == 64 and hnsw_ef(legacy) == -1
    assert hnsw_ef(SimpleNamespace(vector_config={}, vector_index_config=None)) is None


def test_ef_must_be_dynamic_or_positive():
    with pytest.raises(ValueError, match="hnsw_ef"):
        WeaviateStore(hnsw_ef=0)
    assert WeaviateStore(hnsw_ef=-1).hnsw_ef == -1
    assert build_store(Settings()).hnsw_ef == 96  # the default: measured with bench --kb
    assert build_store(Settings(weaviate_hnsw_ef=0)).hnsw_ef is None  # 0 = leave the collection as it is


@pytest.mark.stack
async def test_ef_is_set_at_creation_and_applied_to_an_existing_collection():
    settings = Settings().derive(collection=f"ChatstreamEf{uuid.uuid4().hex[:8]}")
    first = build_store(settings.derive(weaviate_hnsw_ef=48))
    later = build_store(settings.derive(weaviate_hnsw_ef=64))
    untouched = build_store(settings.derive(weaviate_hnsw_ef=0))
    try:
        await first.ensure_collection("t1")
        client = await first._connected()
        collection = client.collections.use(settings.collection)
        assert hnsw_ef(await collection.config.get()) == 48

        await later.ensure_collection("t2")  # an ingest with the new default: the live collection follows
        assert hnsw_ef(await collection.config.get()) == 64
        assert await later.apply_index_config() is False  # already right: no update

        await untouched.ensure_collection("t3")
        assert hnsw_ef(await collection.config.get()) == 64
    finally:
        client = await first._connected()
        await client.collections.delete(settings.collection)
        for store in (first, later, untouched):
            await store.close()
