"""Shared query vectors and per-tenant result caches in Redis: hits, isolation, invalidation by ingest."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from fakes_retrieval import HashEmbedder, MemoryStore

from processors.ingest import ingest
from processors.kb_cache import (
    RetrievalCache,
    SharedEmbeddingCache,
    TenantGenerations,
    invalidate_tenant,
    normalise_query,
)
from processors.records import ChatRequest, ChatTurn, now_ms
from processors.retrieval import Retriever
from processors.tenant_model import TenantModelGuard
from stack.ports import free_port
from streams.config import Settings


def _test_db_url() -> str:
    parts = urlsplit(Settings().redis_connection_url)
    return urlunsplit((parts.scheme, parts.netloc, "/15", parts.query, ""))


@pytest.fixture
async def redis():
    client = aioredis.Redis.from_url(_test_db_url())
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - environment problem, not a test result
        pytest.fail(f"Redis on {_test_db_url()} is not reachable ({exc!r}); start the stack first")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis):
    value = f"test-kb:{uuid.uuid4().hex[:10]}"
    yield value
    keys = [k async for k in redis.scan_iter(match=f"{value}*")]
    if keys:
        await redis.delete(*keys)


def turn(text: str, tenant: str) -> ChatTurn:
    return ChatTurn(request=ChatRequest(uuid.uuid4().hex, "s1", "u1", "web", text, now_ms(), tenant=tenant))


async def two_tenants(tmp_path):
    for tenant, word in (("acme", "blue"), ("globex", "green")):
        kb = tmp_path / tenant
        kb.mkdir()
        (kb / "pw.md").write_text(f"# Password reset\n\nClick forgot password; the {word} button resets it.")
        (kb / "app.md").write_text(f"# Mobile app\n\nThe {word} mobile app runs on phones.")
    store = MemoryStore()
    for tenant in ("acme", "globex"):
        await ingest(tmp_path / tenant, store, HashEmbedder(), tenant)
    return store


def test_normalising_keeps_only_what_cannot_change_the_vector():
    assert normalise_query("  Reset   my\tPassword ", uncased=True) == "reset my password"
    assert normalise_query("  Reset   my\tPassword ", uncased=False) == "Reset my Password"


@pytest.mark.stack
async def test_result_cache_hits_per_tenant_and_never_serves_another_tenant(tmp_path, redis, prefix):
    store = await two_tenants(tmp_path)
    cache = RetrievalCache(redis, ttl_s=30, prefix=prefix)
    retriever = Retriever(store, HashEmbedder(), top_k=2, alpha=0.5, cache=cache)

    first = await retriever.retrieve(turn("reset my password", "acme"))
    again = await retriever.retrieve(turn("Reset  my PASSWORD", "acme"))  # HashEmbedder is not uncased
    assert len(store.searches) == 2 and cache.stats.hits == 0
    repeat = await retriever.retrieve(turn("reset my password", "acme"))
    assert len(store.searches) == 2 and cache.stats.hits == 1
    assert repeat.passages == first.passages and "blue" in repeat.passages[0].text
    assert again.retrieval_ok

    other = await retriever.retrieve(turn("reset my password", "globex"))
    assert len(store.searches) == 3  # same question, other tenant: a miss, searched in its own tenant
    assert all("green" in p.text for p in other.passages) and not any("blue" in p.text for p in other.passages)


@pytest.mark.stack
async def test_a_reingest_invalidates_the_tenants_cached_results(tmp_path, redis, prefix):
    store = await two_tenants(tmp_path)
    cache = RetrievalCache(redis, ttl_s=30, prefix=prefix)
    retriever = Retriever(store, HashEmbedder(), top_k=1, alpha=0.5, cache=cache)
    before = await retriever.retrieve(turn("reset my password", "acme"))
    other_before = await retriever.retrieve(turn("reset my password", "globex"))
    assert "blue button" in before.passages[0].text

    (tmp_path / "acme" / "pw.md").write_text("# Password reset\n\nClick forgot password; the red button resets it.")
    report = await ingest(tmp_path / "acme", store, HashEmbedder(), "acme", on_change=lambda: cache.invalidate("acme"))
    assert report.updated == 1
    after = await retriever.retrieve(turn("reset my password", "acme"))
    assert "red button" in after.passages[0].text  # not the cached passage from before the re-ingest
    assert cache.stats.hits == 0
    other_after = await retriever.retrieve(turn("reset my password", "globex"))
    assert other_after.passages == other_before.passages and cache.stats.hits == 1  # globex kept its cache

    # an ingest that changes nothing does not throw the cache away
    generation = int(await redis.get(f"{prefix}:gen:{{acme}}"))
    await ingest(tmp_path / "acme", store, HashEmbedder(), "acme", on_change=lambda: cache.invalidate("acme"))
    assert int(await redis.get(f"{prefix}:gen:{{acme}}")) == generation == 2  # bumped before and after the write


@pytest.mark.stack
async def test_a_tenant_reingested_with_another_model_is_refused_on_the_next_turn(tmp_path, redis, prefix):
    class ApiModel(HashEmbedder):
        name, model = "openai", "text-embedding-3-small"

    store = await two_tenants(tmp_path)
    await invalidate_tenant(redis, "acme", prefix=prefix)  # acme's first ingest, as `chatstream ingest` does it
    guard = TenantModelGuard(store, "HashEmbedder", ttl_s=30.0, generation=TenantGenerations(redis, prefix=prefix))
    retriever = Retriever(store, HashEmbedder(), top_k=1, alpha=0.5, model_guard=guard)
    assert (await retriever.retrieve(turn("reset my password", "acme"))).retrieval_ok

    await store.drop_tenant("acme")
    await ingest(tmp_path / "acme", store, ApiModel(), "acme", on_change=lambda: invalidate_tenant(redis, "acme", prefix=prefix))
    out = await retriever.retrieve(turn("reset my password", "acme"))  # well inside the guard's 30 s
    assert not out.retrieval_ok and out.passages == []
    assert "'openai:text-embedding-3-small' but this embedder is 'HashEmbedder'" in out.retrieval_error
    assert (await retriever.retrieve(turn("reset my password", "globex"))).retrieval_ok  # globex untouched


@pytest.mark.stack
async def test_a_result_computed_during_an_ingest_is_not_served_after_it(tmp_path, redis, prefix):
    store = await two_tenants(tmp_path)
    cache = RetrievalCache(redis, ttl_s=30, prefix=prefix)
    key = cache.query_key("q", model="m", k=1, alpha=0.5, uncased=True)
    generation, cached = await cache.get("acme", key)
    assert cached is None
    await invalidate_tenant(redis, "acme", prefix=prefix)  # an ingest starts while the search runs
    old = await store.hybrid_search("password", (await HashEmbedder().embed(["password"]))[0], tenant="acme", k=1, alpha=0.5)
    await cache.put("acme", generation, key, old)  # stored under the generation read before searching
    assert (await cache.get("acme", key))[1] is None


@pytest.mark.stack
async def test_shared_vectors_are_keyed_by_model_and_shared_between_workers(redis, prefix):
    class Counting(HashEmbedder):
        pass

    model_a1, model_a2, model_b = Counting(), Counting(), Counting()
    worker1 = SharedEmbeddingCache(model_a1, redis, "local:a", ttl_s=60, uncased=True, prefix=prefix)
    worker2 = SharedEmbeddingCache(model_a2, redis, "local:a", ttl_s=60, uncased=True, prefix=prefix)
    other_model = SharedEmbeddingCache(model_b, redis, "openai:b", ttl_s=60, uncased=False, prefix=prefix)

    v1 = await worker1.embed(["How do I reset my password?", "pricing"])
    v2 = await worker2.embed(["how do i   reset my password?"])
    assert model_a2.calls == [] and worker2.stats.hits == 1  # another worker reuses the vector
    assert v2[0] == pytest.approx(v1[0], abs=1e-6)
    await other_model.embed(["How do I reset my password?"])
    assert model_b.calls == [["How do I reset my password?"]]  # never a vector of another model


async def test_redis_down_means_misses_not_failures(tmp_path):
    store = await two_tenants(tmp_path)
    dead = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    cache = RetrievalCache(dead, ttl_s=30)
    embedder = SharedEmbeddingCache(HashEmbedder(), dead, "m", ttl_s=60, uncased=True)
    retriever = Retriever(store, embedder, top_k=1, alpha=0.5, cache=cache)
    out = await retriever.retrieve(turn("reset my password", "acme"))
    assert out.retrieval_ok and "blue" in out.passages[0].text
    assert cache.stats.errors >= 1 and embedder.stats.errors >= 1
    guarded = Retriever(store, HashEmbedder(), top_k=1, alpha=0.5,
                        model_guard=TenantModelGuard(store, "HashEmbedder", generation=TenantGenerations(dead)))
    assert (await guarded.retrieve(turn("reset my password", "acme"))).retrieval_ok  # generation unknown: time limit only
    await dead.aclose()
