"""Vector-first search with a BM25 rerank of its candidates, computed here instead of in Weaviate.

Weaviate's hybrid search runs two searches per query: HNSW for the vector half and BM25 over the
tenant's inverted index for the keyword half, then fuses them. The BM25 half's cost grows with the
tenant (posting lists get longer); the vector half's barely does. Vector-first asks Weaviate for
the ``candidates`` nearest chunks only, and scores those few texts with BM25 here (title boosted
like the hybrid's ``title^2``), then fuses the two rankings the way Weaviate's relativeScore fusion
does (each half min-max normalised, ``alpha`` x vector + (1 - alpha) x BM25).

The trade-off, measured with ``chatstream bench --kb``: a chunk the vector half does not bring into
the candidates cannot be rescued by its keywords (a product code, a rare name), and the IDF is the
candidates' own, not the tenant's. Tokens follow Weaviate's ``word`` tokenization (lower-cased runs
of letters and digits) and its default English stopword preset.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
# Weaviate's "en" stopword preset (the Lucene English set), removed from BM25 queries by default
STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split()
)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def bm25_scores(
    query: str, docs: Sequence[tuple[str, str]], *, title_weight: float = 2.0, k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """BM25 of each (title, text) for ``query``; IDF and average length taken over ``docs``."""
    terms = [t for t in dict.fromkeys(tokens(query)) if t not in STOPWORDS]
    if not terms or not docs:
        return [0.0] * len(docs)
    counts: list[Counter[str]] = []
    lengths: list[float] = []
    for title, text in docs:
        title_tokens, text_tokens = tokens(title), tokens(text)
        tf: Counter[str] = Counter(text_tokens)
        if title_weight > 0:
            for t in title_tokens:
                tf[t] += title_weight
        counts.append(tf)
        lengths.append(title_weight * len(title_tokens) + len(text_tokens))
    n = len(docs)
    avg = sum(lengths) / n or 1.0
    idf = {}
    for term in terms:
        df = sum(1 for c in counts if c.get(term))
        if df:
            idf[term] = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
    scores = []
    for tf, length in zip(counts, lengths):
        score = 0.0
        norm = k1 * (1 - b + b * length / avg)
        for term, weight in idf.items():
            f = tf.get(term, 0.0)
            if f:
                score += weight * f * (k1 + 1) / (f + norm)
        scores.append(score)
    return scores


def _normalised(values: Sequence[float]) -> list[float]:
    low, high = min(values), max(values)
    if high - low <= 1e-12:
        return [1.0 if high > 0 else 0.0 for _ in values]
    return [(v - low) / (high - low) for v in values]


def relative_score_fusion(vector_scores: Sequence[float], keyword_scores: Sequence[float], alpha: float) -> list[float]:
    """Weaviate's relativeScore fusion: each half min-max normalised, then weighted by ``alpha``."""
    if not vector_scores:
        return []
    v, k = _normalised(vector_scores), _normalised(keyword_scores)
    return [alpha * a + (1 - alpha) * c for a, c in zip(v, k)]
