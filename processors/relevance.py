"""Absolute relevance: does the knowledge base cover a question at all?

Weaviate's hybrid search fuses BM25 and vector scores with ``relativeScoreFusion``, which rescales
both per query, so the best hit scores near 1.0 whether or not it answers the question (see the
field notes). Ranking needs only relative scores; deciding "we do not know this" needs a signal that
means the same thing for every query. The cosine similarity of the query embedding and the chunk
embedding is such a signal: the store computes it from the vectors it already holds
(``Passage.relevance``), and the retriever compares the best one with a threshold calibrated on the
labelled set (``streams/demo/labels.jsonl``, ``chatstream eval calibrate``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from processors.records import Passage


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine of two vectors (0.0 when either is empty or zero)."""
    if not a or not b or len(a) != len(b):
        return 0.0
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return dot / (na * nb)


def best_relevance(passages: Sequence[Passage]) -> float | None:
    """The highest measured relevance among the passages (None when none was measured)."""
    measured = [p.relevance for p in passages if p.relevance is not None]
    return max(measured) if measured else None


def covers(passages: Sequence[Passage], min_relevance: float) -> bool:
    """True when some passage is relevant enough to answer from.

    No passages: not covered. Passages without a measured relevance (a store that cannot measure
    it, records from before the field existed): covered, since there is nothing to decide on.
    ``min_relevance <= 0`` turns the check off.
    """
    if min_relevance <= 0:
        return True
    if not passages:
        return False
    best = best_relevance(passages)
    return best is None or best >= min_relevance
