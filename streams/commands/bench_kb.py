"""``chatstream bench --kb PATH``: what retrieval costs when the knowledge base has 10,000 chunks.

The pipeline bench runs on the 61-article sample, where a hybrid search costs Weaviate 3-4 ms of CPU;
a real help center or wiki is a hundred times larger. This bench:

1. ingests PATH and the sample help center into a tenant of its own collection (``KbBench`` /
   ``kbbench`` by default; resumable, so a second run only checks hashes), so the labelled
   questions of ``streams.demo.retrieval_probe`` are asked among thousands of distractor chunks;
2. builds known-item questions from PATH itself (a sentence from inside a document; the document is
   the answer), so quality is checked on the big corpus as well;
3. for each search profile (``processors.search_profile``) and HNSW ``ef``: Weaviate CPU per query
   (from ``/proc/<weaviate pid>/stat``), latency p50/p99 one query at a time, queries/s with 8
   concurrent, and the hit@1 of both question sets; query vectors are computed beforehand, so
   the figures are Weaviate's alone;
4. with ``--kb-sizes N,M``: tenants of N, M chunks copied (with their vectors, nothing re-embedded)
   from the big one, always holding the answers of every question, so CPU per query can be read
   against chunks per tenant;
5. with ``--kb-zipf N``: N questions drawn Zipf-like from a few hundred, through the retriever with
   no cache, the in-process LRU, and the Redis caches (shared query vectors + per-tenant results),
   with hit rates and CPU per question of this process, Weaviate and Redis.

Run it under ``flock /tmp/cs-bench.lock``; on a shared machine compare ratios within one run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import re
import time
import uuid
from pathlib import Path

from processors.search_profile import SearchProfile
from streams.config import Settings

DEFAULT_TENANT = "kbbench"
DEFAULT_COLLECTION = "KbBench"

# name -> (profile, alpha override or None); the first is today's configuration
PROFILES: dict[str, tuple[SearchProfile, float | None]] = {
    "today": (SearchProfile(), None),
    "text-only": (SearchProfile(query_properties=("text",)), None),
    "ranked": (SearchProfile(fusion="ranked"), None),
    "cap80": (SearchProfile(max_query_chars=80), None),
    "maxdist0.8": (SearchProfile(max_vector_distance=0.8), None),
    "vector-only": (SearchProfile(), 1.0),
    "bm25-only": (SearchProfile(), 0.0),
    "vf20": (SearchProfile(vector_first=20), None),
    "vf50": (SearchProfile(vector_first=50), None),
    "text-vf50": (SearchProfile(query_properties=("text",), vector_first=50), None),
}


def add_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    """The ``--kb*`` options of ``chatstream bench`` (kept here so bench_cmd.py stays small)."""
    parser.add_argument("--kb", metavar="PATH", default=None, help="measure retrieval on this corpus instead of the pipeline")
    parser.add_argument("--kb-tenant", default=DEFAULT_TENANT, help="bench tenant (never the default one)")
    parser.add_argument("--kb-collection", default=DEFAULT_COLLECTION, help="bench collection (HNSW ef is changed on it)")
    parser.add_argument("--kb-profiles", default=",".join(PROFILES), help=f"comma-separated, from {', '.join(PROFILES)}")
    parser.add_argument("--kb-ef", default="", help="comma-separated HNSW ef values to try with the first profile (-1 = dynamic)")
    parser.add_argument("--kb-sizes", default="", help="comma-separated tenant sizes (chunks) to measure the first profile at")
    parser.add_argument("--kb-questions", type=int, default=200, help="known-item questions drawn from the corpus")
    parser.add_argument("--kb-concurrency", type=int, default=8)
    parser.add_argument("--kb-runs", type=int, default=1, help="measure every profile this many times (one lock, one run)")
    parser.add_argument("--kb-passes", type=int, default=1, help="one-at-a-time passes over the questions per measurement (p99 over all)")
    parser.add_argument("--kb-zipf", type=int, default=0, help="also run N Zipf-repeated questions through the caches")
    parser.add_argument("--kb-zipf-pool", type=int, default=300, help="distinct questions the Zipf traffic draws from")


# --- measuring -----------------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_pid(settings: Settings, name: str) -> int | None:
    """The pid of a local-stack service from its pid file (``stack/service.py`` writes it)."""
    try:
        return int((settings.home / "run" / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU seconds spent by this process and the given services between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.spent: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._own = time.process_time()
        self._start = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        self.spent = {name: process_cpu_s(pid) - self._start[name] for name, pid in self.pids.items()}
        self.spent["bench"] = time.process_time() - self._own


def server_env(pid: int | None, name: str) -> str | None:
    """A variable of a running server's environment (what it was really started with)."""
    if pid is None:
        return None
    try:
        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            key, _, value = item.decode(errors="replace").partition("=")
            if key == name:
                return value
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


# --- questions -----------------------------------------------------------------------------------


def known_item_questions(docs, n: int, seed: int = 13) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(question, doc_id): a sentence from inside a document, without its title; the document answers it."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    candidates = list(docs)
    rng.shuffle(candidates)
    for doc in candidates:
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", doc.text) if 8 <= len(s.split()) <= 30]
        sentences = sentences[1:] or sentences  # the first one usually repeats the title
        if not sentences:
            continue
        words = rng.choice(sentences).rstrip(".!?").split()[:14]
        title_words = {w.lower() for w in re.findall(r"\w+", doc.title)}
        question = " ".join(w for w in words if w.lower().strip(",;:()\"'") not in title_words)
        if len(question.split()) >= 5:
            out.append((question, doc.doc_id))
        if len(out) >= n:
            break
    return out


def zipf_traffic(pool: list[str], n: int, s: float = 1.1, seed: int = 7) -> list[str]:
    """``n`` questions from ``pool``, the k-th most frequent asked ~1/k^s as often (support traffic)."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** s for rank in range(len(pool))]
    return rng.choices(pool, weights=weights, k=n)


# --- the bench -----------------------------------------------------------------------------------


@dataclasses.dataclass
class ProfileResult:
    name: str
    describe: str
    queries: int
    weaviate_ms_per_query: float
    p50_ms: float
    p99_ms: float
    qps_concurrent: float
    probe_right: int
    probe_total: int
    known_right: int
    known_total: int
    client_ms_per_query: float = float("nan")  # this process: the gRPC client, plus a local rerank if any

    def line(self) -> str:
        return (
            f"{self.name:14s} weaviate CPU {self.weaviate_ms_per_query:5.2f} ms/query (client {self.client_ms_per_query:4.2f})  "
            f"p50 {self.p50_ms:5.1f} ms  p99 {self.p99_ms:5.1f} ms  {self.qps_concurrent:6.0f} q/s @8  "
            f"probe {self.probe_right}/{self.probe_total}  known-item {self.known_right}/{self.known_total}   ({self.describe})"
        )


async def measure_profile(name, store, profile, alpha, tenant, questions, vectors, k, concurrency, pids, *, probe_n, passes=1):  # type: ignore[no-untyped-def]
    """``passes`` one-at-a-time passes over the questions (latencies pooled: a steadier p99), then one at ``concurrency``."""
    store.profile = profile

    async def search(i: int):  # type: ignore[no-untyped-def]
        return await store.hybrid_search(questions[i][0], vectors[i], tenant=tenant, k=k, alpha=alpha)

    for i in range(min(20, len(questions))):  # warm caches and connections
        await search(i)
    latencies, tops = [], []
    with CpuMeter(pids) as meter:
        for _ in range(max(1, passes)):
            for i in range(len(questions)):
                started = time.perf_counter()
                hits = await search(i)
                latencies.append((time.perf_counter() - started) * 1000)
                if len(tops) < len(questions):
                    tops.append(hits[0].doc_id if hits else None)
    weaviate_ms = meter.spent.get("weaviate", float("nan")) * 1000 / len(latencies)
    client_ms = meter.spent["bench"] * 1000 / len(latencies)
    order = list(range(len(questions)))
    cursor = iter(order)

    async def worker() -> None:
        for i in cursor:
            await search(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    qps = len(order) / (time.perf_counter() - started)
    right = [tops[i] == questions[i][1] for i in range(len(questions))]
    return ProfileResult(
        name, profile.describe() + (f", alpha {alpha:g}" if alpha is not None else ""), len(latencies), weaviate_ms,
        percentile(latencies, 50), percentile(latencies, 99), qps,
        sum(right[:probe_n]), probe_n, sum(right[probe_n:]), len(questions) - probe_n, client_ms,
    )


async def set_ef(store, ef: int) -> None:  # type: ignore[no-untyped-def]
    """The collection's HNSW ef, through the store's own (public) config update."""
    store.hnsw_ef = ef
    await store.apply_index_config()


async def current_ef(store) -> int | None:  # type: ignore[no-untyped-def]
    from processors.vectorstore import hnsw_ef

    client = await store._connected()
    return hnsw_ef(await client.collections.use(store.collection_name).config.get())


async def sized_tenants(store, tenant: str, sizes: list[int], keep_docs: set[str], seed: int = 13) -> dict[int, str]:  # type: ignore[no-untyped-def]
    """Tenants of ``sizes`` chunks copied from ``tenant`` with their vectors: every chunk of ``keep_docs``
    (the questions' answers) plus a random draw of the others. Existing tenants of the right size are kept."""
    from processors.vectorstore import Chunk

    client = await store._connected()
    source = client.collections.use(store.collection_name).with_tenant(tenant)
    objects = [o async for o in source.iterator(include_vector=True)]
    keep = [o for o in objects if o.properties["doc_id"] in keep_docs]
    rest = [o for o in objects if o.properties["doc_id"] not in keep_docs]
    random.Random(seed).shuffle(rest)
    names: dict[int, str] = {}
    for size in sizes:
        name = f"{tenant}-{size}"
        names[size] = name
        if len(await store.stored_chunks(name)) == max(size, len(keep)):
            continue
        chosen = keep + rest[: max(0, size - len(keep))]
        chunks = [
            Chunk(**{f: (int(o.properties[f]) if f == "chunk_index" else str(o.properties.get(f) or ""))
                     for f in Chunk.__dataclass_fields__})
            for o in chosen
        ]
        vectors = [o.vector["default"] for o in chosen]
        for start in range(0, len(chunks), 500):
            await store.upsert(chunks[start : start + 500], vectors[start : start + 500], tenant=name)
        print(f"tenant {name}: {len(chunks)} chunks copied from {tenant}", flush=True)
    return names


async def run_bench(args, settings: Settings) -> int:  # type: ignore[no-untyped-def]
    from processors.embeddings import CachedEmbedder, build_embedder
    from processors.ingest import load_documents
    from processors.vectorstore import build_store
    from streams.commands.ingest_cmd import SAMPLE_KNOWLEDGE_BASE, ingest_path
    from streams.commands.ingest_progress import progress_for
    from streams.demo.retrieval_probe import HELD_OUT, PROBE

    tenant = args.kb_tenant
    if tenant == settings.tenant:
        raise ValueError(f"--kb-tenant must not be the default tenant {tenant!r}: the bench changes it")
    settings = settings.derive(collection=args.kb_collection)
    for path in (Path(args.kb), SAMPLE_KNOWLEDGE_BASE):
        progress = progress_for(every_s=15)
        report = await ingest_path(settings, path, tenant, progress=progress)
        progress.close()
        print(report)

    docs = load_documents(args.kb)
    labelled = list(PROBE) + list(HELD_OUT)
    known = known_item_questions(docs, args.kb_questions)
    questions = labelled + known
    pids = {"weaviate": service_pid(settings, "weaviate"), "redis": service_pid(settings, "redis")}
    if pids["weaviate"] is None:
        print(f"note: no Weaviate pid file under {settings.home / 'run'}; CPU per query cannot be read")

    store = build_store(settings)
    model = build_embedder(settings.derive(embedding_cache_size=0))
    try:
        stored = await store.stored_chunks(tenant)
        print(f"tenant {tenant}: {len(stored)} chunks; {len(labelled)} labelled + {len(known)} known-item questions; "
              f"k={settings.retrieval_top_k}, alpha={settings.retrieval_alpha}, weaviate pid {pids['weaviate']} "
              f"(QUERY_HYBRID_MAXIMUM_RESULTS={server_env(pids['weaviate'], 'QUERY_HYBRID_MAXIMUM_RESULTS') or 'default 100'}, "
              f"HNSW ef {await current_ef(store)})")
        vectors = await model.embed([q for q, _ in questions])
        results: list[ProfileResult] = []
        names = [n.strip() for n in args.kb_profiles.split(",") if n.strip()]
        for name in names * max(1, args.kb_runs):
            if name not in PROFILES:
                raise ValueError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
            profile, alpha = PROFILES[name]
            result = await measure_profile(
                name, store, profile, settings.retrieval_alpha if alpha is None else alpha, tenant, questions,
                vectors, settings.retrieval_top_k, args.kb_concurrency, pids, probe_n=len(labelled), passes=args.kb_passes,
            )
            results.append(result)
            print(result.line(), flush=True)
        for ef in [int(e) for e in args.kb_ef.split(",") if e.strip()] * max(1, args.kb_runs):
            await set_ef(store, ef)
            profile, alpha = PROFILES[names[0]]
            result = await measure_profile(
                f"{names[0]}+ef{ef}", store, profile, settings.retrieval_alpha if alpha is None else alpha, tenant,
                questions, vectors, settings.retrieval_top_k, args.kb_concurrency, pids, probe_n=len(labelled), passes=args.kb_passes,
            )
            print(result.line(), flush=True)
        if args.kb_ef:
            await set_ef(store, settings.weaviate_hnsw_ef)  # back to the configured default
        sizes = sorted(int(s) for s in args.kb_sizes.split(",") if s.strip())
        if sizes:
            from streams.commands.ingest_cmd import SAMPLE_KNOWLEDGE_BASE

            keep = {d.doc_id for d in load_documents(SAMPLE_KNOWLEDGE_BASE)} | {doc for _, doc in known}
            by_size = await sized_tenants(store, tenant, sizes, keep)
            profile, alpha = PROFILES[names[0]]
            for size in sizes * max(1, args.kb_runs):
                result = await measure_profile(
                    f"{size} chunks", store, profile, settings.retrieval_alpha if alpha is None else alpha, by_size[size],
                    questions, vectors, settings.retrieval_top_k, args.kb_concurrency, pids, probe_n=len(labelled), passes=args.kb_passes,
                )
                print(result.line(), flush=True)
        if args.kb_zipf:
            pool = [q for q, _ in questions] + [f"What is {d.title}?" for d in docs[: max(0, args.kb_zipf_pool - len(questions))]]
            pool = pool[: args.kb_zipf_pool]
            traffic = zipf_traffic(pool, args.kb_zipf)
            print(f"zipf traffic: {len(traffic)} questions over {len(pool)} distinct ({len(set(traffic))} asked)")
            await zipf_bench(settings, store, model, tenant, traffic, pids, CachedEmbedder)
    finally:
        await store.close()
        await model.close()
    return 0


async def zipf_bench(settings, store, model, tenant, traffic, pids, CachedEmbedder) -> None:  # type: ignore[no-untyped-def]
    import redis.asyncio as aioredis

    from processors.kb_cache import RetrievalCache, SharedEmbeddingCache, is_uncased
    from processors.records import ChatRequest, ChatTurn, now_ms
    from processors.retrieval import Retriever
    from processors.tenant_model import model_id

    redis = aioredis.from_url(settings.redis_connection_url)
    prefix = f"cs:kbbench-{uuid.uuid4().hex[:8]}"
    mid = model_id(model)
    try:
        variants = {
            "no cache": (model, None),
            "in-process LRU": (CachedEmbedder(model, 4096), None),
            "redis vectors": (SharedEmbeddingCache(model, redis, mid, ttl_s=600, uncased=is_uncased(mid), prefix=prefix), None),
            "redis vectors+results": (
                SharedEmbeddingCache(model, redis, mid, ttl_s=600, uncased=is_uncased(mid), prefix=prefix + "b"),
                RetrievalCache(redis, ttl_s=60, prefix=prefix),
            ),
        }
        for label, (embedder, cache) in variants.items():
            retriever = Retriever(store, embedder, top_k=settings.retrieval_top_k, alpha=settings.retrieval_alpha, cache=cache)
            turns = [ChatTurn(request=ChatRequest(f"z{i}", "s", "u", "web", q, now_ms(), tenant=tenant)) for i, q in enumerate(traffic)]
            with CpuMeter(pids) as meter:
                started = time.perf_counter()
                for turn in turns:
                    out = await retriever.retrieve(turn)
                    if not out.retrieval_ok:
                        raise RuntimeError(out.retrieval_error)
                elapsed = time.perf_counter() - started
            n = len(turns)
            parts = "  ".join(f"{k} {v * 1000 / n:5.2f}" for k, v in sorted(meter.spent.items()))
            stats = []
            for obj in (embedder, cache):
                s = getattr(obj, "stats", None)
                if s is not None and hasattr(s, "hit_rate"):
                    stats.append(f"{type(obj).__name__} hits {s.hit_rate:.0%}")
                elif isinstance(obj, CachedEmbedder):
                    stats.append(f"LRU hits {obj.hits / max(1, obj.hits + obj.misses):.0%}")
            total = sum(meter.spent.values()) * 1000 / n
            print(f"  {label:22s} CPU ms/question: {parts}  total {total:5.2f}   {n / elapsed:6.0f} q/s  {'; '.join(stats)}")
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        for start in range(0, len(keys), 500):
            await redis.delete(*keys[start : start + 500])
        await redis.aclose()


def run(args, settings: Settings) -> int:
    from streams.cli import CommandError

    try:
        return asyncio.run(run_bench(args, settings))
    except (ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
