"""Vector-first search's local BM25 rerank and fusion (no services)."""

from __future__ import annotations

import pytest

from processors.bm25_rerank import bm25_scores, relative_score_fusion, tokens
from processors.search_profile import SearchProfile


def test_tokens_follow_weaviates_word_tokenization():
    assert tokens("Reset 2FA on the iPhone-app, v2.1!") == ["reset", "2fa", "on", "the", "iphone", "app", "v2", "1"]


def test_rare_query_terms_decide_and_stopwords_do_not_count():
    docs = [
        ("Billing", "Invoices are sent monthly to the account owner."),
        ("Security", "Enable two-factor authentication in the security settings."),
        ("Plans", "The business plan includes the security review."),
    ]
    scores = bm25_scores("how do I enable two-factor authentication", docs)
    assert scores.index(max(scores)) == 1 and scores[0] == 0.0
    assert bm25_scores("the of and", docs) == [0.0, 0.0, 0.0]


def test_the_title_boost_lifts_a_title_match():
    docs = [("Password reset", "Use the link we email you."), ("Login help", "If the password reset link expired, ask again.")]
    boosted = bm25_scores("password reset", docs, title_weight=2.0)
    text_only = bm25_scores("password reset", docs, title_weight=0.0)
    assert boosted[0] > boosted[1] and text_only[0] == 0.0 < text_only[1]


def test_relative_score_fusion_normalises_each_half():
    fused = relative_score_fusion([0.8, 0.6, 0.4], [0.0, 5.0, 10.0], alpha=0.75)
    assert fused == pytest.approx([0.75, 0.5, 0.25])
    assert relative_score_fusion([0.7, 0.7], [0.0, 0.0], alpha=0.75) == pytest.approx([0.75, 0.75])
    assert relative_score_fusion([], [], alpha=0.5) == []


def test_the_profile_names_vector_first():
    assert SearchProfile(vector_first=30).describe().startswith("vector-first 30 candidates")
    assert "vector-first" not in SearchProfile().describe()
