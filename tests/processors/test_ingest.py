"""Loading, chunking, stable ids and idempotent re-ingest; unit tests on fakes, then real Weaviate."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fakes_retrieval import HashEmbedder, MemoryStore

from processors.ingest import (
    IngestError,
    chunk_documents,
    chunk_text,
    content_hash,
    ingest,
    load_documents,
)
from streams.commands.ingest_cmd import SAMPLE_KNOWLEDGE_BASE

# --- loading -------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_markdown_title_url_and_stable_id(tmp_path):
    write(tmp_path / "billing" / "Refund Policy.md",
          "---\nurl: https://help.example/refunds\n---\nIntro line.\n\n# Refunds\n\nWithin 14 days.\n")
    (doc,) = load_documents(tmp_path)
    assert doc.doc_id == "billing-refund-policy"
    assert doc.title == "Refunds"
    assert doc.url == "https://help.example/refunds"
    assert doc.source == "billing/Refund Policy.md"
    assert "# Refunds" not in doc.text and "Within 14 days." in doc.text


def test_markdown_without_heading_and_text_files(tmp_path):
    write(tmp_path / "plain_notes.md", "Just text.")
    write(tmp_path / "faq.txt", "Q: hours?\nA: 9 to 5.")
    docs = {d.doc_id: d for d in load_documents(tmp_path)}
    assert docs["plain-notes"].title == "Plain notes"
    assert docs["faq"].title == "Faq" and docs["faq"].text.startswith("Q: hours?")


def test_jsonl_records(tmp_path):
    lines = [
        {"id": "KB-1", "title": "Hours", "text": "We open at 9.", "url": "https://x.example/1"},
        {"title": "No id", "text": "Still fine."},
    ]
    write(tmp_path / "kb.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n\n")
    docs = load_documents(tmp_path / "kb.jsonl")
    assert [(d.doc_id, d.title, d.source, d.url) for d in docs] == [
        ("kb-1", "Hours", "kb.jsonl#KB-1", "https://x.example/1"),
        ("kb-2", "No id", "kb.jsonl#2", ""),
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "kb.jsonl:1: not JSON"),
        ('{"title": "t"}', "field 'text' is missing"),
        ("[1, 2]", "expected an object"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    write(tmp_path / "kb.jsonl", content)
    with pytest.raises(IngestError, match=message):
        load_documents(tmp_path)


def test_clear_errors_for_bad_paths(tmp_path):
    with pytest.raises(IngestError, match="no such file"):
        load_documents(tmp_path / "missing")
    with pytest.raises(IngestError, match="unsupported file type"):
        load_documents(write(tmp_path / "x.pdf", "%PDF"))
    (tmp_path / "bad.md").write_bytes(b"\xff\xfe bad")
    with pytest.raises(IngestError, match="not valid UTF-8"):
        load_documents(tmp_path / "bad.md")


def test_duplicate_ids_are_refused(tmp_path):
    write(tmp_path / "a b.md", "x")
    write(tmp_path / "a-b.md", "y")
    with pytest.raises(IngestError, match="share the id 'a-b'"):
        load_documents(tmp_path)


# --- chunking ------------------------------------------------------------------------------------


def test_chunks_respect_size_and_carry_overlap():
    paragraphs = [f"Paragraph {i} says " + " ".join(f"word{i}x{j}" for j in range(25)) + "." for i in range(10)]
    chunks = chunk_text("\n\n".join(paragraphs), chunk_chars=400, chunk_overlap=80)
    assert len(chunks) > 3
    assert all(len(c) <= 400 for c in chunks)
    for prev, nxt in zip(chunks, chunks[1:]):
        head = nxt.split("\n\n")[0]
        assert prev.endswith(head) and 0 < len(head) <= 80  # the overlap is the previous chunk's tail
    joined = " ".join(chunks)
    assert all(p in joined for p in paragraphs)  # nothing lost


def test_a_huge_paragraph_is_split():
    text = ("This is one sentence. " * 200).strip()
    chunks = chunk_text(text, chunk_chars=300, chunk_overlap=50)
    assert len(chunks) >= 15 and all(len(c) <= 300 for c in chunks)


def test_chunk_ids_and_hashes_are_stable(tmp_path):
    write(tmp_path / "doc.md", "# T\n\n" + "\n\n".join("para " * 40 for _ in range(5)))
    a = chunk_documents(load_documents(tmp_path), chunk_chars=400, chunk_overlap=50)
    b = chunk_documents(load_documents(tmp_path), chunk_chars=400, chunk_overlap=50)
    assert [c.chunk_id for c in a] == [f"doc#{i}" for i in range(len(a))]
    assert [c.content_hash for c in a] == [c.content_hash for c in b]
    assert content_hash("a", "b") != content_hash("ab", "")


def test_sample_knowledge_base_loads():
    docs = load_documents(SAMPLE_KNOWLEDGE_BASE)
    assert 45 <= len(docs) <= 70
    for d in docs:
        assert d.title and d.url.startswith("https://help.northwindcloud.example/articles/")
        assert 80 <= len(d.text.split()) <= 220, d.doc_id
    assert len({d.title for d in docs}) == len(docs)


# --- sync with a fake store ----------------------------------------------------------------------


async def test_reingest_is_idempotent_and_tracks_changes(tmp_path):
    kb = tmp_path / "kb"
    write(kb / "a.md", "# A\n\n" + "\n\n".join(f"alpha paragraph {i} " + "text " * 60 for i in range(4)))
    write(kb / "b.md", "# B\n\nbeta only paragraph.")
    store, embedder = MemoryStore(), HashEmbedder()
    first = await ingest(kb, store, embedder, "t1", chunk_chars=400, chunk_overlap=50)
    assert first.added == first.chunks > 2 and first.updated == first.unchanged == first.deleted == 0
    embedded = [t for call in embedder.calls for t in call]
    assert any(t.startswith("A\nalpha paragraph 0") for t in embedded)  # the title is embedded with the text
    assert {"A", "B", "beta only paragraph."} <= set(embedded)  # and each unit (title, sentence) alone

    again = await ingest(kb, store, embedder, "t1", chunk_chars=400, chunk_overlap=50)
    assert (again.added, again.updated, again.unchanged, again.deleted) == (0, 0, first.chunks, 0)
    assert [t for call in embedder.calls for t in call] == embedded  # nothing re-embedded

    # a shorter, edited a.md: its first chunk changes, its tail chunks go away; b.md untouched
    write(kb / "a.md", "# A\n\nalpha paragraph 0 changed " + "text " * 60)
    third = await ingest(kb, store, embedder, "t1", chunk_chars=400, chunk_overlap=50)
    a_chunks = [cid for cid in store.tenants["t1"] if cid.startswith("a#")]
    assert third.updated == 1 and third.added == 0 and third.unchanged == 1
    assert third.deleted == first.chunks - 2 == len(third.deleted_ids)
    assert a_chunks == ["a#0"]
    assert len(store.tenants["t1"]) == 2


async def test_documents_missing_from_path_are_kept_unless_pruned(tmp_path):
    write(tmp_path / "kb" / "a.md", "# A\n\nalpha")
    write(tmp_path / "kb" / "b.md", "# B\n\nbeta")
    store, embedder = MemoryStore(), HashEmbedder()
    await ingest(tmp_path / "kb", store, embedder, "t1")
    (tmp_path / "kb" / "b.md").unlink()
    kept = await ingest(tmp_path / "kb", store, embedder, "t1")
    assert kept.deleted == 0 and set(store.tenants["t1"]) == {"a#0", "b#0"}
    pruned = await ingest(tmp_path / "kb", store, embedder, "t1", prune=True)
    assert pruned.deleted_ids == ["b#0"] and set(store.tenants["t1"]) == {"a#0"}


async def test_tenants_are_separate(tmp_path):
    write(tmp_path / "a.md", "# A\n\nalpha")
    store, embedder = MemoryStore(), HashEmbedder()
    await ingest(tmp_path, store, embedder, "one")
    report = await ingest(tmp_path, store, embedder, "two")
    assert report.added == 1 and set(store.tenants) == {"one", "two"}
    with pytest.raises(ValueError, match="tenant"):
        await ingest(tmp_path, store, embedder, "bad tenant!")


# --- resume, progress, model per tenant ----------------------------------------------------------


class CrashingStore(MemoryStore):
    """Stores ``survive`` upserts, then fails as a crash (or Ctrl-C) in the middle of an ingest would."""

    def __init__(self, survive: int) -> None:
        super().__init__()
        self.survive = survive

    async def upsert(self, chunks, vectors, *, tenant: str) -> None:
        if self.survive <= 0:
            raise KeyboardInterrupt
        self.survive -= 1
        await super().upsert(chunks, vectors, tenant=tenant)


def many_docs(kb: Path, n: int) -> None:
    for i in range(n):
        write(kb / f"doc-{i:03d}.md", f"# Doc {i}\n\n" + f"paragraph about topic {i} " * (5 + i % 9))


async def test_an_interrupted_ingest_resumes_without_re_embedding_what_is_stored(tmp_path):
    kb = tmp_path / "kb"
    many_docs(kb, 60)
    store, embedder = CrashingStore(survive=3), HashEmbedder()
    with pytest.raises(KeyboardInterrupt):
        await ingest(kb, store, embedder, "t1", batch_size=10, embed_batch_size=4, workers=2)
    stored_before = set(store.tenants["t1"])
    assert 30 <= len(stored_before) < 60  # three writes of >= 10 chunks made it
    first_embedded = sum(len(c) for c in embedder.calls)

    store.survive = 10**6
    resumed_embedder = HashEmbedder()
    report = await ingest(kb, store, resumed_embedder, "t1", batch_size=10, embed_batch_size=4, workers=2)
    assert report.chunks == 60 and report.unchanged == len(stored_before) and report.added == 60 - len(stored_before)
    re_embedded = {t.split("\n")[0] for call in resumed_embedder.calls for t in call}
    assert not re_embedded & {store.tenants["t1"][cid][0].title for cid in stored_before}
    resumed = [t for call in resumed_embedder.calls for t in call]
    assert sum("\n" in t for t in resumed) == 60 - len(stored_before)  # chunk texts ("title\ntext")
    assert sum("\n" not in t for t in resumed) == 2 * (60 - len(stored_before))  # their units: title, sentence
    assert first_embedded >= len(stored_before)
    assert len(store.tenants["t1"]) == 60


async def test_progress_reports_every_stored_batch_then_the_total(tmp_path):
    kb = tmp_path / "kb"
    many_docs(kb, 25)
    seen = []
    await ingest(kb, MemoryStore(), HashEmbedder(), "t1", batch_size=10, embed_batch_size=4, progress=lambda p: seen.append(
        (p.documents, p.chunks, p.to_embed, p.embedded, p.rate, p.eta_s)))
    assert seen[0][:4] == (25, 25, 25, 0)
    assert [s[3] for s in seen] == sorted(s[3] for s in seen) and seen[-1][3] == 25
    assert len(seen) >= 3 and seen[-1][4] > 0 and seen[-1][5] == 0


async def test_an_ingest_with_another_embedding_model_is_refused(tmp_path):
    from processors.tenant_model import EmbeddingModelMismatch

    class OtherModel(HashEmbedder):
        name, model = "openai", "text-embedding-3-small"

    kb = tmp_path / "kb"
    many_docs(kb, 3)
    store = MemoryStore()
    await ingest(kb, store, HashEmbedder(), "t1")
    assert store.models == {"t1": "HashEmbedder"}
    write(kb / "new.md", "# New\n\nsomething new to embed")
    other = OtherModel()
    with pytest.raises(EmbeddingModelMismatch, match="'HashEmbedder' but this embedder is 'openai:text-embedding-3-small'"):
        await ingest(kb, store, other, "t1")
    assert other.calls == [] and "new#0" not in store.tenants["t1"]  # refused before embedding anything
    await ingest(kb, store, other, "t2")  # a new tenant may use the other model
    assert store.models["t2"] == "openai:text-embedding-3-small"


# --- real Weaviate -------------------------------------------------------------------------------


@pytest.mark.stack
async def test_reingest_against_weaviate_updates_instead_of_duplicating(tmp_path):
    from processors.minilm import LocalMiniLMEmbedder
    from processors.vectorstore import build_store
    from streams.config import Settings

    store = build_store(Settings().derive(collection="ChatstreamTest"))
    embedder = LocalMiniLMEmbedder()
    tenant = f"ingest-{uuid.uuid4().hex[:8]}"
    kb = tmp_path / "kb"
    for name in ("reset-password.md", "refunds.md", "api-rate-limits.md"):
        write(kb / name, (SAMPLE_KNOWLEDGE_BASE / name).read_text())
    try:
        first = await ingest(kb, store, embedder, tenant, chunk_chars=400, chunk_overlap=60)
        assert first.added == first.chunks >= 3
        again = await ingest(kb, store, embedder, tenant, chunk_chars=400, chunk_overlap=60)
        assert (again.added, again.updated, again.deleted, again.unchanged) == (0, 0, 0, first.chunks)
        before = await store.stored_chunks(tenant)
        old_refunds = sum(cid.startswith("refunds#") for cid in before)
        assert len(before) == first.chunks and old_refunds >= 2

        write(kb / "refunds.md", "---\nurl: https://help.northwindcloud.example/articles/refunds\n---\n"
                                 "# Refund policy\n\nRefunds are possible within 21 days of the first payment.\n")
        changed = await ingest(kb, store, embedder, tenant, chunk_chars=400, chunk_overlap=60)
        stored = await store.stored_chunks(tenant)
        refunds = sorted(cid for cid in stored if cid.startswith("refunds#"))
        assert refunds == ["refunds#0"]
        assert (changed.added, changed.updated, changed.deleted) == (0, 1, old_refunds - 1)
        assert len(stored) == first.chunks - changed.deleted
        (vector,) = await embedder.embed(["how many days do I have to get a refund"])
        hits = await store.hybrid_search("refund days", vector, tenant=tenant, k=5, alpha=0.5)
        refund_hits = [h for h in hits if h.doc_id == "refunds"]
        assert len(refund_hits) == 1 and "21 days" in refund_hits[0].text
    finally:
        await store.drop_tenant(tenant)
        await store.close()
        await embedder.close()
