"""Bulk embedding for ingestion: length-grouped batches on every core give the one-by-one vectors."""

from __future__ import annotations

import numpy as np
import pytest
from fakes_retrieval import HashEmbedder

from processors.embed_batch import BulkEmbedder, length_grouped
from processors.tenant_model import model_id
from processors.embeddings import CachedEmbedder
from processors.ingest import chunk_documents, chunk_units, embedding_text, load_documents
from processors.passage_units import stored_units
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


async def test_ingest_through_an_openai_compatible_embeddings_endpoint(tmp_path):
    """Batched, several requests in flight, each chunk stored with its own vector; model recorded."""
    import httpx
    from fakes_retrieval import MemoryStore

    from processors.embeddings import OpenAIEmbedder
    from processors.ingest import ingest
    from streams.dev.llm_process import LLMServerProcess
    from streams.dev.llm_server import hash_embedding

    for i in range(40):
        (tmp_path / f"doc-{i:02d}.md").write_text(f"# Topic {i}\n\n" + f"facts about subject {i} " * (3 + i % 5))
    store = MemoryStore()
    with LLMServerProcess() as llm:
        embedder = OpenAIEmbedder(llm.base_url, "key", "scripted-embedding")
        try:
            report = await ingest(tmp_path, store, embedder, "api", embed_batch_size=8, workers=3, batch_size=16)
        finally:
            await embedder.close()
        requests = httpx.get(llm.base_url.removesuffix("/v1") + "/_stats").json()
    assert report.added == report.chunks == 40
    # 40 chunks in batches of 8, then each stored batch's units (a title and one sentence a chunk:
    # 32, 32 and 16 texts) in batches of 8
    assert requests["by_endpoint"]["embeddings"] == 5 + 10, requests
    assert store.models == {"api": "openai:scripted-embedding"}
    for chunk, vector in store.tenants["api"].values():
        assert vector == pytest.approx(hash_embedding(embedding_text(chunk), 384), abs=1e-6)
        units = stored_units(chunk.units_key, chunk.units)
        assert units is not None and units.usable_for("openai:scripted-embedding", chunk_units(chunk))
        np.testing.assert_allclose(units.matrix, [hash_embedding(u, 384) for u in chunk_units(chunk)], atol=1e-3)


async def test_ingest_through_the_endpoint_rides_out_injected_rate_limits_and_5xx(tmp_path):
    """Failed batches are retried (processors.backoff), every chunk stored once with its own vector."""
    from fakes_retrieval import MemoryStore

    from processors.embeddings import OpenAIEmbedder
    from processors.ingest import ingest
    from streams.dev.llm_server import ScriptedLLMServer, hash_embedding

    for i in range(40):
        (tmp_path / f"doc-{i:02d}.md").write_text(f"# Topic {i}\n\n" + f"facts about subject {i} " * (3 + i % 5))
    store = MemoryStore()
    failures = [{"status": 429, "retry_after": 0.05}, {"status": 500}, {"status": 502}, {"status": 503}, {"status": 429}]
    with ScriptedLLMServer(embeddings_fail_next=failures) as llm:
        embedder = OpenAIEmbedder(llm.base_url, "key", "scripted-embedding", retry_base_s=0.01, retry_max_s=0.05)
        try:
            report = await ingest(tmp_path, store, embedder, "api", embed_batch_size=8, workers=3, batch_size=16)
        finally:
            await embedder.close()
        stats = llm.stats()
    assert report.added == report.chunks == 40 and store.upserts == 40
    # 5 batches of chunks, 10 of their units (as above), 5 retried failures
    assert embedder.retries == 5 and stats["by_endpoint"]["embeddings"] == 5 + 10 + 5
    for chunk, vector in store.tenants["api"].values():
        assert vector == pytest.approx(hash_embedding(embedding_text(chunk), 384), abs=1e-6)


async def test_the_retriever_refuses_a_tenant_of_another_model(tmp_path):
    from fakes_retrieval import MemoryStore

    from processors.ingest import ingest
    from processors.records import ChatRequest, ChatTurn, now_ms
    from processors.retrieval import Retriever
    from processors.tenant_model import TenantModelGuard

    class ApiModel(HashEmbedder):
        name, model = "openai", "text-embedding-3-small"

    (tmp_path / "a.md").write_text("# Password reset\n\nClick forgot password.")
    store = MemoryStore()
    await ingest(tmp_path, store, ApiModel(), "kb")
    local = HashEmbedder()
    retriever = Retriever(store, local, top_k=1, alpha=0.5, model_guard=TenantModelGuard(store, model_id(local)))
    out = await retriever.retrieve(ChatTurn(request=ChatRequest("m1", "s", "u", "web", "reset password", now_ms(), tenant="kb")))
    assert not out.retrieval_ok and out.passages == []
    assert "'openai:text-embedding-3-small' but this embedder is 'HashEmbedder'" in out.retrieval_error
    assert store.searches == [] and local.calls == []  # refused before embedding or searching
    same = Retriever(store, ApiModel(), top_k=1, alpha=0.5, model_guard=TenantModelGuard(store, "openai:text-embedding-3-small"))
    ok = await same.retrieve(ChatTurn(request=ChatRequest("m2", "s", "u", "web", "reset password", now_ms(), tenant="kb")))
    assert ok.retrieval_ok and ok.passages[0].doc_id == "a"
