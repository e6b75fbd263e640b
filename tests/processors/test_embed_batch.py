"""Bulk embedding for ingestion: length-grouped batches on every core give the one-by-one vectors."""

from __future__ import annotations

import numpy as np
import pytest
from fakes_retrieval import HashEmbedder

from processors.embed_batch import BulkEmbedder, length_grouped
from processors.tenant_model import model_id
from processors.embeddings import CachedEmbedder
from processors.ingest import chunk_documents, embedding_text, load_documents
from streams.commands.ingest_cmd import SAMPLE_KNOWLEDGE_BASE


def test_length_grouped_batches_cover_every_text_once_shortest_first():
    texts = ["x" * n for n in (50, 3, 20, 7, 1, 90, 12)]
    batches = length_grouped(texts, 3)
    assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    assert [len(b) for b in batches] == [3, 3, 1]
    lengths = [[len(texts[i]) for i in b] for b in batches]
    assert lengths == [[1, 3, 7], [12, 20, 50], [90]]
    with pytest.raises(ValueError):
        length_grouped(texts, 0)


async def test_bulk_embedding_through_the_api_path_keeps_each_text_with_its_vector():
    texts = [f"text number {i} " + "word " * (i % 7) for i in range(50)]
    inner = HashEmbedder()
    bulk = BulkEmbedder(inner, workers=3, batch_size=4)
    got: dict[int, list[float]] = {}
    async for indices, vectors in bulk.embed(texts):
        assert len(indices) == len(vectors) <= 4
        got.update(zip(indices, vectors))
    assert sorted(got) == list(range(50))
    expected = await HashEmbedder().embed(texts)
    assert all(got[i] == expected[i] for i in range(50))


def test_model_id_names_the_vector_space_through_wrappers():
    class Api(HashEmbedder):
        name, model = "openai", "text-embedding-3-small"

    assert model_id(CachedEmbedder(Api())) == "openai:text-embedding-3-small"
    assert model_id(HashEmbedder()) == "HashEmbedder"


async def test_length_grouped_parallel_batches_equal_one_by_one_vectors():
    from processors.minilm import LocalMiniLMEmbedder

    docs = load_documents(SAMPLE_KNOWLEDGE_BASE)[:12]
    texts = [embedding_text(c) for c in chunk_documents(docs, chunk_chars=400, chunk_overlap=60)]
    texts += ["short", "a slightly longer question about passwords?"]
    embedder = LocalMiniLMEmbedder()
    try:
        one_by_one = np.stack([embedder.encode_blocking([t])[0] for t in texts])
        bulk = BulkEmbedder(embedder, workers=2, batch_size=5)
        assert bulk.batch_size == 5
        grouped = np.zeros_like(one_by_one)
        batches = 0
        async for indices, vectors in bulk.embed(texts):
            grouped[indices] = np.asarray(vectors, dtype=np.float32)
            batches += 1
        assert batches == -(-len(texts) // 5)
        np.testing.assert_allclose(grouped, one_by_one, atol=1e-5)
        # and the query-time path (micro-batcher) agrees with both
        via_embed = np.asarray(await embedder.embed(texts[:6]), dtype=np.float32)
        np.testing.assert_allclose(via_embed, one_by_one[:6], atol=1e-5)
    finally:
        await embedder.close()
