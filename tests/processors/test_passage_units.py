"""Units' vectors stored at ingest: the format, the key that guards them, and the meter that reads them."""

from __future__ import annotations

import numpy as np
import pytest
from fakes_retrieval import HashEmbedder, MemoryStore

from processors.ingest import chunk_units, ingest
from processors.passage_units import (
    UnitVectors,
    decode_matrix,
    encode_matrix,
    passage_units,
    stored_units,
    units_key,
)
from processors.relevance import RelevanceMeter
from processors.tenant_model import model_id


def test_a_matrix_survives_the_float16_blob_to_a_thousandth():
    matrix = np.random.default_rng(1).uniform(-1, 1, size=(5, 384)).astype(np.float32)
    back = decode_matrix(encode_matrix(matrix), 5)
    assert back.dtype == np.float32 and back.shape == (5, 384)
    np.testing.assert_allclose(back, matrix, atol=1e-3)
    with pytest.raises(ValueError, match="rows"):
        decode_matrix(encode_matrix(matrix), 7)


def test_stored_units_are_used_only_under_their_model_and_texts():
    units = passage_units("Reset your password", "Open settings. Choose reset.")
    assert units == ["Reset your password", "Open settings.", "Choose reset."]
    stored = stored_units(units_key("m1", units), encode_matrix(np.ones((3, 4))))
    assert stored is not None and stored.usable_for("m1", units)
    assert not stored.usable_for("m2", units)  # another model's space
    assert not stored.usable_for("m1", ["Reset your password", "Open settings. Choose reset."])  # other split
    assert stored_units("", "") is None and stored_units("m1#x#y", "not base64 of 3 rows!") is None


async def ingested(tmp_path) -> tuple[MemoryStore, HashEmbedder]:
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "export.md").write_text("# Export your data\n\nOpen settings. Choose export. A file is mailed to you.")
    (tmp_path / "kb" / "billing.md").write_text("# Billing\n\nInvoices are monthly. Cards are charged on the first.")
    store, embedder = MemoryStore(), HashEmbedder()
    await ingest(tmp_path / "kb", store, embedder, "t1")
    return store, embedder


async def test_the_meter_reads_stored_units_once_and_embeds_nothing(tmp_path):
    store, ingest_embedder = await ingested(tmp_path)
    query = (await ingest_embedder.embed(["how do I export my data"]))[0]
    passages = await store.hybrid_search("export data", query, tenant="t1", k=2, alpha=0.5)
    embedder = HashEmbedder()
    meter = RelevanceMeter(embedder, stored=store.unit_vectors)

    measured = await meter.measure(query, passages, tenant="t1")
    assert embedder.calls == [] and store.unit_reads == [[p.chunk_id for p in passages]]
    # the same relevance as embedding the units here, within float16's rounding
    embedded = await RelevanceMeter(HashEmbedder()).measure(query, passages)
    assert [p.relevance for p in measured] == pytest.approx([p.relevance for p in embedded], abs=1e-3)

    await meter.measure(query, passages, tenant="t1")  # known now: no second read
    assert len(store.unit_reads) == 1 and embedder.calls == []


async def test_units_of_another_model_or_an_unreadable_store_are_embedded_instead(tmp_path):
    store, ingest_embedder = await ingested(tmp_path)
    query = (await ingest_embedder.embed(["invoices"]))[0]
    passages = await store.hybrid_search("invoices", query, tenant="t1", k=2, alpha=0.5)
    units = [u for p in passages for u in passage_units(p.title, p.text)]

    class OtherModel(HashEmbedder):
        model = "another"

    other = OtherModel()
    assert model_id(other) != model_id(ingest_embedder)
    await RelevanceMeter(other, stored=store.unit_vectors).measure(query, passages, tenant="t1")
    assert sorted(t for call in other.calls for t in call) == sorted(set(units))

    async def down(chunk_ids, *, tenant):
        raise ConnectionError("store down")

    embedder = HashEmbedder()
    measured = await RelevanceMeter(embedder, stored=down).measure(query, passages, tenant="t1")
    assert all(p.relevance is not None for p in measured[:2])
    assert sorted(t for call in embedder.calls for t in call) == sorted(set(units))


async def test_ingest_stores_each_chunks_units_and_redoes_chunks_stored_without_them(tmp_path):
    store, embedder = await ingested(tmp_path)
    model = model_id(embedder)
    for chunk, _ in store.tenants["t1"].values():
        units = stored_units(chunk.units_key, chunk.units)
        assert isinstance(units, UnitVectors) and units.usable_for(model, chunk_units(chunk))
        np.testing.assert_allclose(units.matrix, await embedder.embed(chunk_units(chunk)), atol=1e-3)

    # a knowledge base ingested before units were stored: its chunks count as updated once
    for cid, (chunk, vector) in list(store.tenants["t1"].items()):
        store.tenants["t1"][cid] = (chunk.__class__(**{**chunk.__dict__, "units_key": "", "units": ""}), vector)
    report = await ingest(tmp_path / "kb", store, embedder, "t1")
    assert (report.updated, report.unchanged) == (2, 0)
    assert all(c.units for c, _ in store.tenants["t1"].values())
    again = await ingest(tmp_path / "kb", store, embedder, "t1")
    assert (again.updated, again.unchanged) == (0, 2)
