"""The int8-compute MiniLM: built once from the installed model, close to it, and a vector space of its own."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import processors.minilm_int8 as minilm_int8
from processors.embeddings import build_embedder
from processors.minilm import LocalMiniLMEmbedder
from processors.tenant_model import model_id
from streams.config import Settings

KNOWLEDGE_BASE = Path(__file__).parents[2] / "streams" / "demo" / "knowledge_base"

QUESTIONS = {
    "How do I export my data?": "data-export",
    "I forgot my password": "reset-password",
    "can i pay yearly": "annual-billing",
    "how to cancel my plan": "cancel-subscription",
    "where do I find my invoices": "invoices",
    "set up two factor authentication": "two-factor-authentication",
    "how do I create an API key": "api-keys",
    "log out other sessions": "active-sessions",
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def _sentences() -> tuple[list[str], list[str]]:
    sentences, docs = [], []
    for page in sorted(KNOWLEDGE_BASE.glob("*.md")):
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", page.read_text(encoding="utf-8")):
            sentence = sentence.strip("# -*").strip()
            if len(sentence) > 20:
                sentences.append(sentence)
                docs.append(page.stem)
    return sentences, docs


def test_int8_compute_embeds_close_to_the_shipped_model_and_finds_the_same_pages(cache_dir) -> None:
    shipped, int8 = LocalMiniLMEmbedder(), LocalMiniLMEmbedder(int8_compute=True, cache_dir=cache_dir)
    sentences, docs = _sentences()
    assert len(sentences) > 300
    a, b = shipped.encode_blocking(sentences), int8.encode_blocking(sentences)
    cosines = (a * b).sum(axis=1)
    assert cosines.mean() >= 0.985 and cosines.min() >= 0.95, (cosines.mean(), cosines.min())
    assert not np.allclose(a, b), "the int8 model must really be another computation"
    qa, qb = shipped.encode_blocking(list(QUESTIONS)), int8.encode_blocking(list(QUESTIONS))
    for i, (question, page) in enumerate(QUESTIONS.items()):
        assert docs[int(np.argmax(a @ qa[i]))] == page, question  # the shipped model's answer, as a check of the data
        assert docs[int(np.argmax(b @ qb[i]))] == page, question
    assert [p.name for p in cache_dir.iterdir()] == [minilm_int8.dynamic_int8_model(shipped.model_path, cache_dir).name]


def test_the_converted_model_is_built_once_and_then_read_from_the_cache(cache_dir, monkeypatch) -> None:
    source = LocalMiniLMEmbedder().model_path
    built = minilm_int8.dynamic_int8_model(source, cache_dir)  # built by the test above, or now

    def no_second_build(*args, **kwargs):
        raise AssertionError("converted again although the cache holds it")

    monkeypatch.setattr("onnxruntime.quantization.quantize_dynamic", no_second_build)
    assert minilm_int8.dynamic_int8_model(source, cache_dir) == built
    vectors = LocalMiniLMEmbedder(int8_compute=True, cache_dir=cache_dir).encode_blocking(["hello"])
    assert vectors.shape == (1, 384)


def test_a_failed_build_leaves_no_file_behind(tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("onnxruntime.quantization.quantize_dynamic", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        minilm_int8.dynamic_int8_model(LocalMiniLMEmbedder().model_path, tmp_path)
    assert list(tmp_path.iterdir()) == [], "no half-built model (or its work folder) left for the next start"


def test_int8_compute_needs_a_cache_folder() -> None:
    with pytest.raises(ValueError, match="cache_dir"):
        LocalMiniLMEmbedder(int8_compute=True)


def test_int8_compute_is_another_vector_space_and_follows_the_setting(tmp_path) -> None:
    shipped = build_embedder(Settings(embedding_cache_size=0))
    int8 = build_embedder(Settings(embedding_int8_compute=True, cache_dir=tmp_path, embedding_cache_size=0))
    assert isinstance(int8, LocalMiniLMEmbedder) and int8.int8_compute and int8.cache_dir == tmp_path / "models"
    # the tenant guard and the query-vector caches key on it: a tenant ingested with one is never searched with the other
    assert model_id(shipped) == "local:all-MiniLM-L6-v2-int8"
    assert model_id(int8) == "local:all-MiniLM-L6-v2-int8-dynamic"
