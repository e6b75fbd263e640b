"""The knowledge-base index: chunks with our own vectors, searched by BM25 + vector (hybrid).

Weaviate holds one collection with multi-tenancy on: a tenant per knowledge base, so tenants are
isolated (separate shards) and a tenant can be dropped or re-ingested alone. We bring the vectors
(vectorizer none), so ingestion and queries use the same embedder and Weaviate needs no model. An
object's UUID is uuid5 of its chunk id: re-ingesting a chunk overwrites it instead of adding a copy.

The client is weaviate-client v4's async client (REST for schema, gRPC for queries and batches),
connected lazily so a store can be built before Weaviate is up and reconnects after an outage.

The HNSW ``ef`` (how many neighbours the vector half of a search explores) is the store's, not
Weaviate's dynamic default: set when the collection is created and applied to an existing one the
first time this process ensures it (an ingest), through the client's public config update. At 11k
chunks ef 96 kept the labelled questions' ranking for 9-17 % less Weaviate CPU per query than the
dynamic ef (8 x the hybrid candidates = 160); ef 64 saved ~30 % but lost one of 40. See
``chatstream bench --kb`` and the README.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from opentelemetry import trace

from processors.passage_units import UnitVectors, stored_units
from processors.records import Passage
from processors.search_profile import SearchProfile
from processors.spans import active_span

tracer = trace.get_tracer("chatstream.retrieval")
log = logging.getLogger(__name__)

# Weaviate's own rule for tenant names
_TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CHUNK_NAMESPACE = uuid.UUID("5b0e6c38-5f7e-4d0b-9a55-6f3c1f0c2a11")


@dataclass(frozen=True)
class Chunk:
    """One searchable piece of a document; ``chunk_id`` is stable across re-ingests."""

    doc_id: str
    chunk_id: str
    title: str
    source: str
    url: str
    text: str
    chunk_index: int
    content_hash: str
    # the vectors of the chunk's relevance units (``processors.passage_units``), base64 float16, and
    # the key naming their model and texts; empty until ingest embeds them
    units_key: str = ""
    units: str = ""


@dataclass(frozen=True)
class StoredChunk:
    """What the store knows about an indexed chunk, enough to decide whether to re-embed it."""

    chunk_id: str
    doc_id: str
    content_hash: str
    units_key: str = ""


class VectorStoreError(RuntimeError):
    """The store is unreachable or refused the operation."""


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT_RE.match(tenant):
        raise ValueError(f"tenant {tenant!r} must be 1-64 letters, digits, '_' or '-'")
    return tenant


def chunk_uuid(chunk_id: str) -> str:
    return str(uuid.uuid5(_CHUNK_NAMESPACE, chunk_id))


@runtime_checkable
class VectorStore(Protocol):
    async def ensure_collection(self, tenant: str) -> None: ...

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]], *, tenant: str) -> None: ...

    async def hybrid_search(
        self, query: str, vector: list[float], *, tenant: str, k: int, alpha: float
    ) -> list[Passage]: ...

    async def stored_chunks(self, tenant: str) -> dict[str, StoredChunk]: ...

    async def unit_vectors(self, chunk_ids: Sequence[str], *, tenant: str) -> dict[str, UnitVectors]: ...

    async def delete_chunks(self, chunk_ids: Sequence[str], *, tenant: str) -> int: ...

    async def embedding_model(self, tenant: str) -> str | None: ...

    async def record_embedding_model(self, tenant: str, model: str) -> None: ...

    async def close(self) -> None: ...


_MAX_HANDLES = 1024  # tenants' collection handles kept per client (then rebuilt as needed)
_RETURN_PROPERTIES = ["doc_id", "chunk_id", "title", "source", "url", "text", "chunk_index"]
# the collection's one vector is self-provided and unnamed, which Weaviate names "default"
_VECTOR_NAME = "default"


def hnsw_ef(config) -> int | None:  # type: ignore[no-untyped-def]
    """The HNSW ef of a collection's config (``collection.config.get()``), None when not HNSW."""
    named = (getattr(config, "vector_config", None) or {}).get(_VECTOR_NAME)
    index = named.vector_index_config if named is not None else getattr(config, "vector_index_config", None)
    return getattr(index, "ef", None)


class WeaviateStore:
    """``VectorStore`` on Weaviate (v4 async client, multi-tenant collection)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        http_port: int = 8080,
        grpc_port: int = 50051,
        collection: str = "HelpCenter",
        *,
        query_timeout_s: float = 5.0,
        insert_timeout_s: float = 60.0,
        profile: SearchProfile | None = None,
        api_key: str | None = None,
        hnsw_ef: int | None = None,
    ) -> None:
        if not re.match(r"^[A-Z][A-Za-z0-9_]*$", collection):
            raise ValueError(f"collection {collection!r} must start with a capital letter (Weaviate class name rules)")
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.collection_name = collection
        self.query_timeout_s = query_timeout_s
        self.insert_timeout_s = insert_timeout_s
        self.profile = profile or SearchProfile()
        self.api_key = api_key  # None: an anonymous server (the local stack always sets one)
        if hnsw_ef is not None and hnsw_ef != -1 and hnsw_ef < 1:
            raise ValueError(f"hnsw_ef must be -1 (dynamic), >= 1, or None (leave as is), got {hnsw_ef}")
        self.hnsw_ef = hnsw_ef  # None: whatever the collection has
        self._index_checked = False
        self._client = None
        self._connect_lock = asyncio.Lock()
        self._collection_ready = False
        self._tenants: set[str] = set()
        # tenant -> collection handle of the connected client: building one (``collections.use`` +
        # ``with_tenant``, each with its batch wrappers) cost about as much CPU as the query itself
        self._handles: dict[tuple[str, str], Any] = {}
        self._handles_client: Any = None

    async def warm_up(self) -> None:
        """Import the client library and connect now: about a second of CPU and a 76-175 ms connect that
        would otherwise land on the first turns. A Weaviate that is down at start is not an error here:
        the turns degrade and the retriever's breaker takes it from there."""
        await asyncio.to_thread(_import_client)
        try:
            await self._connected()
        except Exception as exc:  # noqa: BLE001 - see docstring
            log.warning("Weaviate not reachable at start (%s); retrieval connects on the first turn", exc)

    async def _connected(self):  # type: ignore[no-untyped-def]
        if self._client is not None and self._client.is_connected():
            return self._client
        async with self._connect_lock:
            if self._client is not None and self._client.is_connected():
                return self._client
            import weaviate
            from weaviate.classes.init import AdditionalConfig, Auth, Timeout

            client = None
            try:
                client = weaviate.use_async_with_local(
                    host=self.host,
                    port=self.http_port,
                    grpc_port=self.grpc_port,
                    additional_config=AdditionalConfig(
                        timeout=Timeout(init=5, query=self.query_timeout_s, insert=self.insert_timeout_s)
                    ),
                    # the init checks ask pypi.org for the client's latest version on every connect;
                    # the server's version and REST are still checked, gRPC by the first query
                    skip_init_checks=True,
                    auth_credentials=Auth.api_key(self.api_key) if self.api_key else None,
                )
                await client.connect()
            except Exception as exc:
                if client is not None:
                    await _close_quietly(client)
                raise VectorStoreError(
                    f"Weaviate at {self.host}:{self.http_port} (gRPC {self.grpc_port}) is unreachable: {exc}"
                ) from exc
            self._client = client
            return client

    async def _collection(self, tenant: str, name: str | None = None):  # type: ignore[no-untyped-def]
        """The tenant's handle on the chunks' collection (or on ``name``), built once per connected
        client (handles are stateless wrappers over the client's connection, meant to be reused)."""
        client = await self._connected()
        if client is not self._handles_client or len(self._handles) >= _MAX_HANDLES:
            self._handles, self._handles_client = {}, client
        name = name or self.collection_name
        handle = self._handles.get((name, tenant))
        if handle is None:
            handle = self._handles[(name, tenant)] = client.collections.use(name).with_tenant(check_tenant(tenant))
        return handle

    async def ensure_collection(self, tenant: str) -> None:
        """Create the collection and the tenant when missing (safe to call concurrently and often)."""
        check_tenant(tenant)
        if self._collection_ready and tenant in self._tenants:
            return
        from weaviate.classes.config import Configure, DataType, Property, Tokenization

        client = await self._connected()
        with tracer.start_as_current_span("weaviate ensure_collection") as span:
            span.set_attribute("db.system", "weaviate")
            span.set_attribute("chatstream.tenant", tenant)
            if not await client.collections.exists(self.collection_name):
                keyword = dict(tokenization=Tokenization.FIELD, index_searchable=False)
                await _unless_exists(client.collections.create(
                    self.collection_name,
                    description="Knowledge-base chunks; a tenant per knowledge base.",
                    vector_config=Configure.Vectors.self_provided(
                        vector_index_config=None if self.hnsw_ef is None else Configure.VectorIndex.hnsw(ef=self.hnsw_ef)
                    ),
                    multi_tenancy_config=Configure.multi_tenancy(enabled=True),
                    properties=[
                        Property(name="doc_id", data_type=DataType.TEXT, **keyword),
                        Property(name="chunk_id", data_type=DataType.TEXT, **keyword),
                        Property(name="title", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
                        Property(name="source", data_type=DataType.TEXT, **keyword),
                        Property(name="url", data_type=DataType.TEXT, **keyword),
                        Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
                        Property(name="chunk_index", data_type=DataType.INT),
                        Property(name="content_hash", data_type=DataType.TEXT, **keyword),
                        _units_key_property(),
                    ],
                ))
            elif not self._collection_ready:
                await self._add_units_key(client)
            self._collection_ready = True
            if not self._index_checked:
                await self.apply_index_config()
            await _ensure_tenant(client.collections.use(self.collection_name), tenant)
            await self._ensure_units(client, tenant)
            self._tenants.add(tenant)

    async def _add_units_key(self, client) -> None:  # type: ignore[no-untyped-def]
        """A collection made before chunks had stored units gets the key's property (once; Weaviate's
        auto-schema would make it searchable text)."""
        collection = client.collections.use(self.collection_name)
        if "units_key" not in {p.name for p in (await collection.config.get()).properties}:
            await _unless_exists(collection.config.add_property(_units_key_property()))

    # --- the chunks' unit vectors ----------------------------------------------------------------
    # In a collection of their own (same tenants, same object ids as the chunks, no vector index):
    # stored in the chunk objects, the blobs cost Weaviate about 1 ms more CPU per hybrid query
    # (4.4 -> 5.5 ms, measured), which reads whole objects of its candidates; a worker needs a
    # chunk's units once.

    @property
    def _units_name(self) -> str:
        return f"{self.collection_name}Units"

    async def _ensure_units(self, client, tenant: str) -> None:  # type: ignore[no-untyped-def]
        from weaviate.classes.config import Configure, DataType, Property

        if not await client.collections.exists(self._units_name):
            await _unless_exists(client.collections.create(
                self._units_name,
                description="Each chunk's relevance units' vectors (processors.passage_units), by chunk id.",
                vector_config=Configure.Vectors.self_provided(),  # never given one: nothing is indexed
                multi_tenancy_config=Configure.multi_tenancy(enabled=True),
                properties=[_units_key_property(), Property(name="units", data_type=DataType.BLOB)],
            ))
        await _ensure_tenant(client.collections.use(self._units_name), tenant)

    async def apply_index_config(self) -> bool:
        """Give the existing collection this store's HNSW ef (public config update); True if it changed.

        ef is a property of the collection's vector index, searched by every tenant, so it is
        changed in place (no re-index) and takes effect on the next query of every worker.
        """
        self._index_checked = True
        if self.hnsw_ef is None:
            return False
        from weaviate.classes.config import Reconfigure

        client = await self._connected()
        if not await client.collections.exists(self.collection_name):
            return False
        collection = client.collections.use(self.collection_name)
        if hnsw_ef(await collection.config.get()) == self.hnsw_ef:
            return False
        with tracer.start_as_current_span("weaviate update_index_config") as span:
            span.set_attribute("db.system", "weaviate")
            span.set_attribute("chatstream.hnsw_ef", self.hnsw_ef)
            await collection.config.update(
                vector_config=Reconfigure.Vectors.update(
                    name=_VECTOR_NAME, vector_index_config=Reconfigure.VectorIndex.hnsw(ef=self.hnsw_ef)
                )
            )
        return True

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]], *, tenant: str) -> None:
        """Insert or overwrite chunks (object id = uuid5(chunk_id)); raises if any object failed."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if not chunks:
            return
        from weaviate.classes.data import DataObject

        await self.ensure_collection(tenant)
        collection = await self._collection(tenant)
        objects = [
            DataObject(
                uuid=chunk_uuid(c.chunk_id),
                vector=list(map(float, v)),
                properties={
                    "doc_id": c.doc_id,
                    "chunk_id": c.chunk_id,
                    "title": c.title,
                    "source": c.source,
                    "url": c.url,
                    "text": c.text,
                    "chunk_index": c.chunk_index,
                    "content_hash": c.content_hash,
                    "units_key": c.units_key if c.units else "",  # written after the units themselves
                },
            )
            for c, v in zip(chunks, vectors)
        ]
        units = [DataObject(uuid=chunk_uuid(c.chunk_id), properties={"units_key": c.units_key, "units": c.units})
                 for c in chunks if c.units]
        with tracer.start_as_current_span("weaviate upsert") as span:
            span.set_attribute("db.system", "weaviate")
            span.set_attribute("chatstream.tenant", tenant)
            span.set_attribute("chatstream.chunks", len(objects))
            if units:  # first: a chunk's key then never names units that are not there
                stored = await (await self._collection(tenant, self._units_name)).data.insert_many(units)
                if stored.has_errors:
                    first = next(iter(stored.errors.values()))
                    raise VectorStoreError(f"{len(stored.errors)} of {len(units)} chunks' units failed to store: {first.message}")
            result = await collection.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise VectorStoreError(f"{len(result.errors)} of {len(objects)} chunks failed to upsert: {first.message}")

    async def hybrid_search(
        self, query: str, vector: list[float], *, tenant: str, k: int, alpha: float
    ) -> list[Passage]:
        """Top ``k`` chunks by fused BM25 (title boosted) + vector score; alpha 1 = pure vector."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be within [0, 1], got {alpha}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        from weaviate.classes.query import MetadataQuery

        collection = await self._collection(tenant)
        if self.profile.vector_first:
            return await self._vector_first_search(collection, query, vector, tenant=tenant, k=k, alpha=alpha)
        with active_span(tracer, "weaviate hybrid_search", attributes={
            "db.system": "weaviate", "chatstream.tenant": tenant, "chatstream.retrieval.k": k,
            "chatstream.retrieval.alpha": alpha,
        }) as span:
            result = await collection.query.hybrid(
                **self.profile.hybrid_kwargs(query),  # query text, BM25 properties, fusion (search_profile.py)
                vector=vector,
                alpha=alpha,
                limit=k,
                return_metadata=MetadataQuery(score=True),
                return_properties=_RETURN_PROPERTIES,
            )
            span.set_attribute("chatstream.retrieval.hits", len(result.objects))
        return [_passage(obj.properties, float(obj.metadata.score or 0.0)) for obj in result.objects]

    async def _vector_first_search(self, collection, query: str, vector: list[float], *, tenant: str, k: int, alpha: float) -> list[Passage]:  # type: ignore[no-untyped-def]
        """The ``profile.vector_first`` nearest chunks, BM25-reranked here (processors.bm25_rerank)."""
        from weaviate.classes.query import MetadataQuery

        from processors.bm25_rerank import bm25_scores, relative_score_fusion

        with active_span(tracer, "weaviate near_vector", attributes={
            "db.system": "weaviate", "chatstream.tenant": tenant,
            "chatstream.retrieval.candidates": self.profile.vector_first,
        }):
            result = await collection.query.near_vector(
                near_vector=vector,
                limit=max(k, self.profile.vector_first),
                return_metadata=MetadataQuery(distance=True),
                return_properties=_RETURN_PROPERTIES,
            )
        objects = result.objects
        boosts = {"title^2": 2.0, "title": 1.0}
        title_weight = max((boosts.get(p, 0.0) for p in self.profile.query_properties), default=0.0)
        keyword = bm25_scores(
            self.profile.bm25_query(query),
            [(str(o.properties.get("title") or ""), str(o.properties.get("text") or "")) for o in objects],
            title_weight=title_weight,
        )
        fused = relative_score_fusion([1.0 - float(o.metadata.distance or 0.0) for o in objects], keyword, alpha)
        ranked = sorted(range(len(objects)), key=lambda i: -fused[i])[:k]
        return [_passage(objects[i].properties, float(fused[i])) for i in ranked]

    async def unit_vectors(self, chunk_ids: Sequence[str], *, tenant: str) -> dict[str, UnitVectors]:
        """The stored unit vectors of those of ``chunk_ids`` that have them, in one request (not part
        of the hybrid query: returned with every hit they cost 0.75 ms more Weaviate and 0.5 ms more
        client CPU per query, measured, while a worker needs a chunk's units once)."""
        from weaviate.classes.query import Filter

        if not chunk_ids:
            return {}
        collection = await self._collection(tenant, self._units_name)
        ids = {chunk_uuid(c): c for c in chunk_ids}
        with active_span(tracer, "weaviate unit_vectors", attributes={
            "db.system": "weaviate", "chatstream.tenant": tenant, "chatstream.chunks": len(chunk_ids),
        }):
            result = await collection.query.fetch_objects(
                filters=Filter.by_id().contains_any(list(ids)), limit=len(ids), return_properties=["units_key", "units"],
            )
        found = {}
        for obj in result.objects:
            units = stored_units(obj.properties.get("units_key"), obj.properties.get("units"))
            if units is not None and str(obj.uuid) in ids:
                found[ids[str(obj.uuid)]] = units
        return found

    async def stored_chunks(self, tenant: str) -> dict[str, StoredChunk]:
        """Every chunk of a tenant (id, document, content hash); empty for a new tenant."""
        await self.ensure_collection(tenant)
        collection = await self._collection(tenant)
        out: dict[str, StoredChunk] = {}
        with tracer.start_as_current_span("weaviate list_chunks") as span:
            span.set_attribute("db.system", "weaviate")
            span.set_attribute("chatstream.tenant", tenant)
            async for obj in collection.iterator(return_properties=["chunk_id", "doc_id", "content_hash", "units_key"]):
                p = obj.properties
                out[str(p["chunk_id"])] = StoredChunk(
                    str(p["chunk_id"]), str(p["doc_id"]), str(p["content_hash"]), str(p.get("units_key") or "")
                )
        return out

    async def delete_chunks(self, chunk_ids: Sequence[str], *, tenant: str) -> int:
        """Delete chunks by id; returns how many were deleted."""
        if not chunk_ids:
            return 0
        from weaviate.classes.query import Filter

        collection = await self._collection(tenant)
        units = await self._collection(tenant, self._units_name)  # a chunk's stored units go with it
        deleted = 0
        with tracer.start_as_current_span("weaviate delete") as span:
            span.set_attribute("db.system", "weaviate")
            span.set_attribute("chatstream.tenant", tenant)
            ids = list(chunk_ids)
            for start in range(0, len(ids), 500):
                part = [chunk_uuid(c) for c in ids[start : start + 500]]
                result = await collection.data.delete_many(where=Filter.by_id().contains_any(part))
                deleted += int(result.successful)
                await units.data.delete_many(where=Filter.by_id().contains_any(part))
            span.set_attribute("chatstream.chunks", deleted)
        return deleted

    async def drop_tenant(self, tenant: str) -> None:
        """Remove a knowledge base entirely (tests, and re-ingesting from scratch)."""
        client = await self._connected()
        for name in (self.collection_name, self._units_name):
            if await client.collections.exists(name):
                collection = client.collections.use(name)
                if await collection.tenants.exists(check_tenant(tenant)):
                    await collection.tenants.remove([tenant])
        if await client.collections.exists(self._models_name):
            await client.collections.use(self._models_name).data.delete_many(where=_filter_tenant(tenant))
        self._tenants.discard(tenant)

    # --- the embedding model per tenant ----------------------------------------------------------
    # Kept beside the chunks (a small collection without multi-tenancy, one object per tenant) so
    # the record lives and dies with the vectors it describes; see processors.tenant_model.

    @property
    def _models_name(self) -> str:
        return f"{self.collection_name}Models"

    async def embedding_model(self, tenant: str) -> str | None:
        """The model the tenant's vectors were made with, or None when nothing is recorded."""
        check_tenant(tenant)
        client = await self._connected()
        if not await client.collections.exists(self._models_name):
            return None
        obj = await client.collections.use(self._models_name).query.fetch_object_by_id(_model_uuid(tenant))
        return None if obj is None else str(obj.properties["model"])

    async def record_embedding_model(self, tenant: str, model: str) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization

        check_tenant(tenant)
        client = await self._connected()
        if not await client.collections.exists(self._models_name):
            await _unless_exists(client.collections.create(
                self._models_name,
                description="The embedding model of each knowledge-base tenant.",
                vector_config=Configure.Vectors.self_provided(),
                properties=[
                    Property(name="tenant", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="model", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                ],
            ))
        models = client.collections.use(self._models_name)
        if await models.query.fetch_object_by_id(_model_uuid(tenant)) is None:
            await models.data.insert({"tenant": tenant, "model": model}, uuid=_model_uuid(tenant))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)


def _import_client() -> None:
    import weaviate  # noqa: F401
    from weaviate.classes.query import MetadataQuery  # noqa: F401


def _model_uuid(tenant: str) -> str:
    return str(uuid.uuid5(_CHUNK_NAMESPACE, f"embedding-model:{tenant}"))


def _filter_tenant(tenant: str):  # type: ignore[no-untyped-def]
    from weaviate.classes.query import Filter

    return Filter.by_property("tenant").equal(tenant)


async def _close_quietly(client) -> None:  # type: ignore[no-untyped-def]
    try:
        await client.close()
    except Exception:  # noqa: BLE001 - closing a half-open client must not mask the real error
        pass


def build_store(settings) -> WeaviateStore:  # type: ignore[no-untyped-def]
    """The store configured from ``streams.config.Settings``."""
    return WeaviateStore(
        settings.weaviate_host,
        settings.weaviate_http_port,
        settings.weaviate_grpc_port,
        settings.collection,
        query_timeout_s=settings.retrieval_timeout_s,
        api_key=settings.stack_secret("weaviate_api_key"),
        hnsw_ef=settings.weaviate_hnsw_ef or None,
    )


def _passage(properties: dict, score: float) -> Passage:
    """A search hit as a Passage (the same for hybrid and vector-first results)."""
    return Passage(
        doc_id=str(properties["doc_id"]),
        chunk_id=str(properties["chunk_id"]),
        title=str(properties.get("title") or ""),
        source=str(properties.get("url") or properties.get("source") or ""),
        text=str(properties.get("text") or ""),
        score=score,
    )


async def _unless_exists(create: Awaitable[Any]) -> None:
    """Await a create (collection, property, tenant) that another process may have made first:
    Weaviate's "already exists" is then success, any other refusal is raised."""
    from weaviate.exceptions import UnexpectedStatusCodeError

    try:
        await create
    except UnexpectedStatusCodeError as exc:
        if "already exists" not in str(exc):
            raise


async def _ensure_tenant(collection, tenant: str) -> None:  # type: ignore[no-untyped-def]
    """Create the tenant in ``collection`` unless it exists."""
    from weaviate.classes.tenants import Tenant

    if not await collection.tenants.exists(tenant):
        await _unless_exists(collection.tenants.create([Tenant(name=tenant)]))


def _units_key_property():  # type: ignore[no-untyped-def]
    """The key of a chunk's stored units (``processors.passage_units.units_key``): read, never searched."""
    from weaviate.classes.config import DataType, Property, Tokenization

    return Property(name="units_key", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                    index_searchable=False, index_filterable=False)
