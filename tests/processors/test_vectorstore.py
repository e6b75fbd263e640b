"""The Weaviate store's HNSW ef (set at creation, applied to an existing collection, left alone when unset)
and the chunks' stored unit vectors."""

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
        await client.collections.delete([settings.collection, f"{settings.collection}Units"])
        for store in (first, later, untouched):
            await store.close()


@pytest.mark.stack
async def test_units_are_stored_beside_chunks_read_back_and_deleted_with_them_and_an_older_collection_gets_them(tmp_path):
    """A collection made before chunks had stored units gains the key and a units collection; ingest fills them."""
    from fakes_retrieval import HashEmbedder
    from weaviate.classes.config import Configure, DataType, Property

    from processors.ingest import chunk_documents, chunk_units, ingest, load_documents
    from processors.tenant_model import model_id

    settings = Settings().derive(collection=f"ChatstreamUnits{uuid.uuid4().hex[:8]}")
    store = build_store(settings)
    client = await store._connected()
    try:
        await client.collections.create(  # the properties of a collection made by an older chatstream
            settings.collection,
            vector_config=Configure.Vectors.self_provided(),
            multi_tenancy_config=Configure.multi_tenancy(enabled=True),
            properties=[Property(name=n, data_type=DataType.TEXT) for n in
                        ("doc_id", "chunk_id", "title", "source", "url", "text", "content_hash")]
                       + [Property(name="chunk_index", data_type=DataType.INT)],
        )
        (tmp_path / "a.md").write_text("# Export your data\n\nOpen settings. Choose export. A file is mailed to you.")
        embedder = HashEmbedder()
        report = await ingest(tmp_path, store, embedder, "t1")
        assert report.added == 1
        chunk_props = {p.name: p for p in (await client.collections.use(settings.collection).config.get()).properties}
        assert "units" not in chunk_props  # the blobs live apart
        key = chunk_props["units_key"]  # declared, not auto-schema's searchable text
        assert key.data_type == DataType.TEXT and not key.index_searchable and not key.index_filterable
        unit_config = await client.collections.use(f"{settings.collection}Units").config.get()
        assert {p.name: p.data_type for p in unit_config.properties}["units"] == DataType.BLOB

        found = await store.unit_vectors(["a#0", "missing#0"], tenant="t1")
        assert list(found) == ["a#0"]
        [chunk] = chunk_documents(load_documents(tmp_path), chunk_chars=800, chunk_overlap=120)
        units = chunk_units(chunk)
        assert found["a#0"].usable_for(model_id(embedder), units)
        assert found["a#0"].matrix.shape == (len(units), HashEmbedder.dimension)
        assert (await store.stored_chunks("t1"))["a#0"].units_key == found["a#0"].key
        assert await store.unit_vectors([], tenant="t1") == {}

        assert await store.delete_chunks(["a#0"], tenant="t1") == 1
        assert await store.unit_vectors(["a#0"], tenant="t1") == {}  # the units go with their chunk
    finally:
        for name in (settings.collection, f"{settings.collection}Units", f"{settings.collection}Models"):
            await client.collections.delete(name)
        await store.close()
