"""Load a knowledge base (Markdown, text, JSONL), chunk it, and sync it into the vector store.

Ids are stable so re-ingesting is a sync, not an append: ``doc_id`` is the slug of the file's path
relative to the ingested folder (or the JSONL record's ``id``), ``chunk_id`` is ``<doc_id>#<n>``, and
the store's object id derives from the chunk id. A content hash per chunk lets an unchanged chunk
skip embedding; a changed document overwrites its chunks and loses the ones it no longer has.
Documents missing from PATH are only deleted with ``prune`` (ingesting one file must not wipe the
rest of the knowledge base).

Chunks are built from whole paragraphs up to ``chunk_chars``; each chunk after the first starts
with the last ``chunk_overlap`` characters of the previous one (cut at a word boundary), so a fact
split across the boundary is still found. The title is embedded with each chunk's text, because
help-center titles ("Reset your password") are the best summary of what a chunk answers.

Each chunk's relevance units (title and sentences, ``processors.passage_units``) are embedded here
too and stored with it, so the worker's relevance meter does not embed them in the middle of a turn.
A stored chunk whose units are missing or were made by another model counts as updated.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from processors.embed_batch import BulkEmbedder
from processors.embeddings import Embedder
from processors.passage_units import encode_matrix, passage_units, units_key
from processors.tenant_model import check_embedding_model, model_id
from processors.vectorstore import Chunk, VectorStore

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".jsonl"}


class IngestError(ValueError):
    """The input cannot be ingested as given (the message says which file and why)."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    source: str
    url: str
    text: str


@dataclass
class IngestReport:
    tenant: str
    documents: int = 0
    chunks: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    elapsed_s: float = 0.0
    added_ids: list[str] = field(default_factory=list, repr=False)
    updated_ids: list[str] = field(default_factory=list, repr=False)
    deleted_ids: list[str] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        return (
            f"tenant {self.tenant}: {self.documents} documents, {self.chunks} chunks: "
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.deleted} deleted in {self.elapsed_s:.1f}s"
        )


# --- loading -------------------------------------------------------------------------------------


def slugify(value: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    return slug or "doc"


def _humanize(stem: str) -> str:
    words = re.sub(r"[-_]+", " ", stem).strip()
    return words[:1].upper() + words[1:] if words else stem


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc


def _front_matter(text: str, path: Path) -> tuple[dict, str]:
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---", 4)
    if end < 0:
        raise IngestError(f"{path}: front matter opened with '---' but never closed")
    try:
        meta = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as exc:
        raise IngestError(f"{path}: bad front matter: {exc}") from exc
    if not isinstance(meta, dict):
        raise IngestError(f"{path}: front matter must be a mapping")
    return meta, text[end + 4 :].lstrip("\n")


def _markdown(path: Path, rel: str) -> Document:
    meta, body = _front_matter(_read_text(path), path)
    title = str(meta.get("title") or "")
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# "):
            title = title or line[2:].strip()
            del lines[i]  # the title is stored (and boosted) on its own
            break
    return Document(
        doc_id=str(meta.get("id") or slugify(str(Path(rel).with_suffix("")))),
        title=title or _humanize(path.stem),
        source=rel,
        url=str(meta.get("url") or ""),
        text="\n".join(lines).strip(),
    )


def _plain(path: Path, rel: str) -> Document:
    return Document(
        doc_id=slugify(str(Path(rel).with_suffix(""))),
        title=_humanize(path.stem),
        source=rel,
        url="",
        text=_read_text(path).strip(),
    )


def _jsonl(path: Path, rel: str) -> list[Document]:
    docs = []
    base = slugify(str(Path(rel).with_suffix("")))
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise IngestError(f"{path}:{lineno}: expected an object with title and text")
        text, title = record.get("text"), record.get("title")
        if not isinstance(text, str) or not text.strip():
            raise IngestError(f"{path}:{lineno}: field 'text' is missing or empty")
        if title is not None and not isinstance(title, str):
            raise IngestError(f"{path}:{lineno}: field 'title' must be a string")
        raw_id = record.get("id")
        doc_id = slugify(str(raw_id)) if raw_id not in (None, "") else f"{base}-{lineno}"
        docs.append(
            Document(
                doc_id=doc_id,
                title=(title or "").strip() or doc_id,
                source=f"{rel}#{raw_id if raw_id not in (None, '') else lineno}",
                url=str(record.get("url") or ""),
                text=text.strip(),
            )
        )
    return docs


def load_documents(path: str | Path) -> list[Document]:
    """Every document under ``path`` (a file or a folder, searched recursively), in a stable order."""
    root = Path(path)
    if not root.exists():
        raise IngestError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise IngestError(f"{root}: unsupported file type (use {', '.join(sorted(SUPPORTED_SUFFIXES))})")
        files, base = [root], root.parent
    else:
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in SUPPORTED_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        base = root
    docs: list[Document] = []
    for file in files:
        rel = file.relative_to(base).as_posix()
        suffix = file.suffix.lower()
        if suffix == ".jsonl":
            docs.extend(_jsonl(file, rel))
        elif suffix == ".txt":
            docs.append(_plain(file, rel))
        else:
            docs.append(_markdown(file, rel))
    seen: dict[str, str] = {}
    for doc in docs:
        if doc.doc_id in seen:
            raise IngestError(f"two documents share the id {doc.doc_id!r}: {seen[doc.doc_id]} and {doc.source}")
        seen[doc.doc_id] = doc.source
    return [d for d in docs if d.text]


# --- chunking ------------------------------------------------------------------------------------


def _split_long(paragraph: str, limit: int) -> list[str]:
    """A paragraph longer than ``limit``: by sentences, then by words as a last resort."""
    pieces: list[str] = []
    current = ""
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > limit:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return [p for p in pieces if p]


def _overlap_tail(text: str, overlap: int) -> str:
    if overlap <= 0 or len(text) <= overlap:
        return text if overlap > 0 else ""
    tail = text[-overlap:]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail


def chunk_text(text: str, *, chunk_chars: int, chunk_overlap: int) -> list[str]:
    """Paragraph-packed chunks of at most ``chunk_chars`` (plus the overlap carried in)."""
    if chunk_chars < 50:
        raise ValueError("chunk_chars must be >= 50")
    if not 0 <= chunk_overlap < chunk_chars // 2:
        raise ValueError("chunk_overlap must be >= 0 and less than half of chunk_chars")
    # a paragraph must fit after a carried-over tail, so long ones are split below that size
    limit = chunk_chars - chunk_overlap - 2
    paragraphs: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if block:
            paragraphs.extend(_split_long(block, limit) if len(block) > limit else [block])
    chunks: list[str] = []
    current: list[str] = []
    fresh = 0  # paragraphs in ``current`` that are not the carried-over tail
    for para in paragraphs:
        size = sum(map(len, current)) + 2 * len(current)
        if fresh and size + len(para) > chunk_chars:
            chunks.append("\n\n".join(current))
            tail = _overlap_tail(chunks[-1], chunk_overlap)
            current, fresh = ([tail] if tail else []), 0
        current.append(para)
        fresh += 1
    if fresh:
        chunks.append("\n\n".join(current))
    return chunks


def content_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def chunk_documents(docs: Iterable[Document], *, chunk_chars: int, chunk_overlap: int) -> list[Chunk]:
    chunks = []
    for doc in docs:
        for i, text in enumerate(chunk_text(doc.text, chunk_chars=chunk_chars, chunk_overlap=chunk_overlap)):
            chunks.append(
                Chunk(
                    doc_id=doc.doc_id,
                    chunk_id=f"{doc.doc_id}#{i}",
                    title=doc.title,
                    source=doc.source,
                    url=doc.url,
                    text=text,
                    chunk_index=i,
                    content_hash=content_hash(doc.title, doc.source, doc.url, str(i), text),
                )
            )
    return chunks


def embedding_text(chunk: Chunk) -> str:
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


def chunk_units(chunk: Chunk) -> list[str]:
    return passage_units(chunk.title, chunk.text)


async def with_units(bulk: BulkEmbedder, chunks: Sequence[Chunk], model: str) -> list[Chunk]:
    """The chunks with their units' vectors; a text shared by several (a document's title) is embedded once."""
    groups = [chunk_units(c) for c in chunks]
    texts = list(dict.fromkeys(u for group in groups for u in group))
    vectors: dict[str, list[float]] = {}
    async for indices, batch in bulk.embed(texts):
        vectors.update((texts[i], v) for i, v in zip(indices, batch))
    return [
        replace(c, units_key=units_key(model, group), units=encode_matrix([vectors[u] for u in group]))
        for c, group in zip(chunks, groups)
    ]


# --- sync ----------------------------------------------------------------------------------------


@dataclass
class IngestProgress:
    """Where an ingest is, handed to the ``progress`` callback after each stored batch."""

    tenant: str
    documents: int
    chunks: int
    to_embed: int
    embedded: int = 0
    elapsed_s: float = 0.0
    embed_started_s: float = 0.0  # when embedding began (loading and diffing come first)
    # batches go shortest first, so the ETA follows characters, not chunks
    chars_total: int = 0
    chars_embedded: int = 0

    @property
    def rate(self) -> float:
        """Chunks embedded and stored per second since embedding began."""
        spent = self.elapsed_s - self.embed_started_s
        return self.embedded / spent if spent > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        spent = self.elapsed_s - self.embed_started_s
        if self.chars_total and self.chars_embedded and spent > 0:
            return (self.chars_total - self.chars_embedded) / (self.chars_embedded / spent)
        rate = self.rate
        return (self.to_embed - self.embedded) / rate if rate > 0 else None


async def ingest(
    path: str | Path,
    store: VectorStore,
    embedder: Embedder,
    tenant: str,
    *,
    chunk_chars: int = 800,
    chunk_overlap: int = 120,
    prune: bool = False,
    batch_size: int = 64,
    embed_batch_size: int | None = None,
    workers: int | None = None,
    progress: Callable[[IngestProgress], None] | None = None,
    on_change: Callable[[], Awaitable[None]] | None = None,
) -> IngestReport:
    """Make the tenant's index match the documents under ``path``; see the module doc for the rules.

    Resumable: chunks are stored every ``batch_size`` as they are embedded, and a chunk whose id and
    content hash are already stored is never embedded again, so an ingest stopped by Ctrl-C or a
    crash continues where it stopped when run again. Embedding runs on every core
    (``processors.embed_batch``); the embedding model is recorded for the tenant, and an ingest
    with another model is refused before anything is written (vectors of two models never mix).
    ``on_change`` is awaited before the first write and again after the last one when anything
    changed (the retrieval cache's invalidation).
    """
    started = time.perf_counter()
    docs = load_documents(path)
    chunks = chunk_documents(docs, chunk_chars=chunk_chars, chunk_overlap=chunk_overlap)
    report = IngestReport(tenant=tenant, documents=len(docs), chunks=len(chunks))

    await store.ensure_collection(tenant)
    stored = await store.stored_chunks(tenant)
    model = model_id(embedder)
    to_write: list[Chunk] = []
    for chunk in chunks:
        known = stored.get(chunk.chunk_id)
        if known is None:
            report.added_ids.append(chunk.chunk_id)
            to_write.append(chunk)
        elif known.content_hash != chunk.content_hash or known.units_key != units_key(model, chunk_units(chunk)):
            report.updated_ids.append(chunk.chunk_id)
            to_write.append(chunk)
        else:
            report.unchanged += 1

    if to_write:
        await check_embedding_model(store, tenant, model, record=True)
    wanted = {c.chunk_id for c in chunks}
    loaded_docs = {d.doc_id for d in docs}
    stale = sorted(
        cid for cid, known in stored.items() if cid not in wanted and (prune or known.doc_id in loaded_docs)
    )
    if on_change is not None and (to_write or stale):
        await on_change()
    texts = [embedding_text(c) for c in to_write]
    state = IngestProgress(tenant, len(docs), len(chunks), len(to_write), chars_total=sum(map(len, texts)))
    state.embed_started_s = state.elapsed_s = time.perf_counter() - started
    if progress is not None:
        progress(state)
    bulk = BulkEmbedder(embedder, workers=workers, batch_size=embed_batch_size)
    ready_chunks: list[Chunk] = []
    ready_vectors: list[list[float]] = []

    async def flush() -> None:
        await store.upsert(await with_units(bulk, ready_chunks, model), ready_vectors, tenant=tenant)
        state.embedded += len(ready_chunks)
        state.chars_embedded += sum(len(embedding_text(c)) for c in ready_chunks)
        state.elapsed_s = time.perf_counter() - started
        ready_chunks.clear()
        ready_vectors.clear()
        if progress is not None:
            progress(state)

    async for indices, vectors in bulk.embed(texts):
        ready_chunks.extend(to_write[i] for i in indices)
        ready_vectors.extend(vectors)
        if len(ready_chunks) >= batch_size:
            await flush()
    if ready_chunks:
        await flush()

    if stale:
        await store.delete_chunks(stale, tenant=tenant)
    if on_change is not None and (to_write or stale):
        await on_change()
    report.deleted_ids = stale
    report.added, report.updated, report.deleted = len(report.added_ids), len(report.updated_ids), len(stale)
    report.elapsed_s = time.perf_counter() - started
    return report


def summarize_ids(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")
