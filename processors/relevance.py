"""Absolute relevance: does the knowledge base cover a question at all?

Weaviate's hybrid search fuses BM25 and vector scores with ``relativeScoreFusion``, which rescales
both per query, so the best hit scores near 1.0 whether or not it answers the question (see the
field notes). Ranking needs only relative scores; deciding "we do not know this" needs a signal that
means the same thing for every query. The cosine similarity of the query embedding and the chunk
embedding is such a signal: the store computes it from the vectors it already holds
(``Passage.relevance``), and the retriever compares the best one with a threshold calibrated on the
labelled set (``streams/demo/labels.jsonl``, ``chatstream eval calibrate``).

Cosine alone separates poorly on short user questions (MiniLM puts "is there time tracking on
tasks" as close to the tasks article as "how many subtasks can a task have"), so the decision score
adds a lexical term: the share of the query's content words that occur in the passage (an absolute
BM25-like signal: no per-query normalisation). ``answer_score = relevance + LEXICAL_WEIGHT * coverage``;
the weight and the threshold were chosen on the labelled set (see the issue-10 note for the table).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from processors.generation.text import content_words
from processors.records import Passage

LEXICAL_WEIGHT = 0.3


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


def term_coverage(query: str, passage: Passage) -> float:
    """Share of the query's content words (folded) that occur in the passage's title or text."""
    wanted = set(content_words(query))
    if not wanted:
        return 0.0
    return len(wanted & set(content_words(f"{passage.title} {passage.text}"))) / len(wanted)


def answer_score(query: str, passages: Sequence[Passage]) -> float | None:
    """Best ``relevance + LEXICAL_WEIGHT * coverage`` over the passages (None when unmeasured)."""
    scores = [p.relevance + LEXICAL_WEIGHT * term_coverage(query, p) for p in passages if p.relevance is not None]
    return max(scores) if scores else None


def covers(passages: Sequence[Passage], min_relevance: float, query: str = "") -> bool:
    """True when some passage is relevant enough to answer from (``answer_score >= min_relevance``).

    No passages: not covered. Passages without a measured relevance (a store that cannot measure
    it, records from before the field existed): covered, since there is nothing to decide on.
    ``min_relevance <= 0`` turns the check off.
    """
    if min_relevance <= 0:
        return True
    if not passages:
        return False
    best = answer_score(query, passages)
    return best is None or best >= min_relevance
