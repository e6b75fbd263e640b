"""``chatstream ingest PATH``: sync Markdown, text and JSONL files into a knowledge-base tenant."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from streams.config import Settings

# The bundled help center of the fictional "Northwind Cloud" (used by the demo and the tests).
SAMPLE_KNOWLEDGE_BASE = Path(__file__).resolve().parent.parent / "demo" / "knowledge_base"


def register(sub) -> None:
    parser = sub.add_parser(
        "ingest",
        help="load a knowledge base (Markdown, .txt, .jsonl) into Weaviate",
        description="Chunk, embed and upsert documents; re-running updates changed chunks and skips unchanged ones.",
    )
    parser.add_argument("path", help=f"file or folder to ingest ('sample' = {SAMPLE_KNOWLEDGE_BASE})")
    parser.add_argument("--tenant", default=None, help="knowledge base to write (default: CHATSTREAM_TENANT)")
    parser.add_argument(
        "--prune", action="store_true", help="also delete documents of the tenant that are no longer under PATH"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="embedding threads / API requests in flight (default: one per core)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    parser.set_defaults(handler=run)


def run(args, settings: Settings) -> int:
    from streams.cli import CommandError
    from streams.commands.ingest_progress import format_duration, progress_for

    path = SAMPLE_KNOWLEDGE_BASE if args.path == "sample" else Path(args.path)
    tenant = args.tenant or settings.tenant
    if args.workers is not None:
        settings = settings.derive(ingest_workers=args.workers)
    progress = None if args.quiet else progress_for(sys.stdout)
    try:
        report = asyncio.run(ingest_path(settings, path, tenant, prune=args.prune, progress=progress))
    except KeyboardInterrupt:
        last = progress.last if progress is not None else None
        if progress is not None:
            progress.close()
        done = f"{last.embedded} of {last.to_embed} chunks stored" if last else "nothing stored yet"
        print(f"interrupted: {done}; run the same command again to continue (stored chunks are not embedded again)")
        return 130
    except (ValueError, OSError) as exc:
        if progress is not None:
            progress.close()
        raise CommandError(str(exc)) from exc
    if progress is not None:
        progress.close()
    from processors.ingest import summarize_ids

    print(report)
    last = progress.last if progress is not None else None
    if last is not None and last.embedded:
        spent = last.elapsed_s - last.embed_started_s
        print(
            f"  embedded {last.embedded} chunks in {format_duration(spent)} ({last.rate:.1f} chunks/s, "
            f"{settings.ingest_workers or os.cpu_count()} workers); loading and diffing took {last.embed_started_s:.1f}s"
        )
    for label, ids in (("added", report.added_ids), ("updated", report.updated_ids), ("deleted", report.deleted_ids)):
        if ids and len(ids) < report.chunks:  # a first full ingest lists nothing
            print(f"  {label}: {summarize_ids(ids)}")
    return 0


async def ingest_path(settings: Settings, path: Path, tenant: str, *, prune: bool = False, progress=None):  # type: ignore[no-untyped-def]
    """Ingest with the store and embedder the settings describe; used by the CLI and the demo."""
    from processors.embeddings import EmbeddingError, build_embedder
    from processors.ingest import ingest
    from processors.vectorstore import VectorStoreError, build_store, check_tenant
    from streams.cli import CommandError

    check_tenant(tenant)
    store = build_store(settings)
    try:
        embedder = build_embedder(settings)
    except EmbeddingError as exc:
        raise CommandError(str(exc)) from exc
    try:
        return await ingest(
            path,
            store,
            embedder,
            tenant,
            chunk_chars=settings.chunk_chars,
            chunk_overlap=settings.chunk_overlap,
            prune=prune,
            workers=settings.ingest_workers or None,
            embed_batch_size=settings.ingest_embed_batch or None,
            progress=progress,
            on_change=lambda: _invalidate_cached_results(settings, tenant),
        )
    except VectorStoreError as exc:
        raise CommandError(f"{exc} (is the stack up? `chatstream stack up`)") from exc
    except EmbeddingError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        await store.close()
        await embedder.close()


async def _invalidate_cached_results(settings: Settings, tenant: str) -> None:
    """Workers may cache search results per tenant (``retrieval_cache_ttl_s``): make them stale."""
    import redis.asyncio as aioredis

    from processors.kb_cache import invalidate_tenant

    client = aioredis.from_url(settings.redis_connection_url, socket_timeout=5, socket_connect_timeout=3)
    try:
        await invalidate_tenant(client, tenant)
    except Exception as exc:  # noqa: BLE001 - the ingest itself must go on
        print(
            f"warning: could not invalidate cached search results of {tenant!r} in Redis ({exc}); "
            f"workers with a result cache may serve results older than this ingest for up to "
            f"CHATSTREAM_RETRIEVAL_CACHE_TTL_S ({settings.retrieval_cache_ttl_s:g}s)",
            file=sys.stderr,
        )
    finally:
        await client.aclose()
